// Draws each chart of the page from the series its element carries in `data-chart`
// ({"t": [unix seconds], "lag": [records], "rate": [records/s]}), on load and after each htmx
// refresh of the page's content.
(function () {
  function draw(root) {
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      var s = JSON.parse(el.getAttribute("data-chart"));
      el.textContent = "";
      new uPlot({
        width: Math.max(el.clientWidth, 400),
        height: 200,
        scales: { lag: {}, rate: {} },
        series: [
          {},
          { label: "lag (records)", stroke: "#c0392b", width: 2, scale: "lag" },
          { label: "records/s", stroke: "#2471a3", width: 2, scale: "rate" }
        ],
        axes: [{}, { scale: "lag" }, { scale: "rate", side: 1, grid: { show: false } }]
      }, [s.t, s.lag, s.rate], el);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
})();
