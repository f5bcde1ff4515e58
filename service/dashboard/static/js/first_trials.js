// The study page's head starts the trial table's first request at once, while the page's modules
// load (trial_table.js takes the response): a round trip off the first paint. A file of its own,
// not an inline script: the Content-Security-Policy allows only the server's own scripts.
// It is async, so it may also run after the table asked for the page itself (a slow answer for this
// file): the table then leaves null here, and this asks nothing (it would fetch the page twice).
(function () {
  if (window.actsearchFirstTrials === null) return;
  var url = document.currentScript.dataset.url;
  window.actsearchFirstTrials = { url: url, response: fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }) };
})();
