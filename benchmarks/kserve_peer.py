"""The KServe peer of `edgestack bench MODEL --protocols --peers kserve`: KServe's own Python
ModelServer (REST v2 and gRPC, its defaults otherwise) serving one ONNX file with a plain
kserve.Model, no batching, as a KServe user would write it.

Runs in .venv-kserve (`make kserve-venv`: kserve pins packages that clash with ours), so it
imports nothing from edgestack. The session gets the same settings as our server's:
`--threads` intra-op threads, no inter-op pool, spin-waiting off (RunnerOptions.spinning).

    .venv-kserve/bin/python benchmarks/kserve_peer.py --model_name fashion-cnn \\
        --onnx artifacts/fashion-cnn/1/model.int8.onnx --threads 2 --http_port 8080 --grpc_port 8081
"""

import argparse

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, onnx_path: str, threads: int):
        super().__init__(name)
        self.onnx_path, self.threads = onnx_path, threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.onnx_path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    # KServe's --workers > 1 starts its REST processes by pickling the model: each loads its own session.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "session"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.load()

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        outputs = self.session.run(None, {self.input_name: payload.inputs[0].as_numpy()})
        answers = []
        for name, array in zip(self.output_names, outputs):
            answer = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            answer.set_data_from_numpy(array, binary_data=True)
            answers.append(answer)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=answers,
                             use_binary_outputs=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], conflict_handler="resolve")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()  # kserve's own parser has --workers (processes)
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers).start(
        [OnnxModel(args.model_name, args.onnx, args.threads)])
