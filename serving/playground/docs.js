// Swagger UI on this server's OpenAPI document. BentoML's document carries a README with badge
// images from the internet: its description is replaced here, so the page loads nothing from
// outside; validatorUrl null: no call to the online validator either.
window.onload = async function () {
  const target = document.getElementById("swagger-ui");
  let spec;
  try {
    const response = await fetch("/docs.json");
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    spec = await response.json();
  } catch (exc) {
    target.textContent = `could not load /docs.json: ${exc.message}`;
    return;
  }
  spec.info = { ...spec.info, description:
    "Every served model behind one BentoML server on ONNX Runtime. Try them in the browser at " +
    "[the playground](/); the Open Inference Protocol (v2) routes are under /v2." };
  window.ui = SwaggerUIBundle({
    spec, dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
  });
};
