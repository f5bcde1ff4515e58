// Starts Swagger UI on /api/v1/docs (FastAPI's defaults) from a file: the Content-Security-Policy
// allows no inline script. "Try it out" needs "Authorize" with a token for changes: the session
// cookie alone is refused for them (no CSRF token here).
window.ui = SwaggerUIBundle({
  url: document.currentScript.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis],
});
