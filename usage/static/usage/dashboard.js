// The usage dashboard's charts: stacked bars per day, from the figures the page carries
// (json_script #dashboard-charts), the same figures its tables list for readers without JavaScript.
"use strict";

(() => {
  // Colour-blind-safe categorical colours (Okabe–Ito), then the run endings' own.
  const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999"];
  const ENDINGS = { completed: "#2e7d32", failed: "#c62828", interrupted: "#ef6c00" };
  const css = getComputedStyle(document.documentElement);
  const quiet = css.getPropertyValue("--body-quiet-color").trim() || "#666";
  const hairline = css.getPropertyValue("--hairline-color").trim() || "#e8e8e8";
  const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 4 });
  const format = (unit, value) => (unit === "USD" ? usd.format(value) : String(value));

  for (const chart of JSON.parse(document.getElementById("dashboard-charts").textContent)) {
    new Chart(document.getElementById(`chart-${chart.id}`), {
      type: "bar",
      data: {
        labels: chart.days,
        datasets: chart.series.map((series, n) => ({
          label: series.label,
          data: series.values,
          backgroundColor: ENDINGS[series.label] ?? PALETTE[n % PALETTE.length],
        })),
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        scales: {
          x: {
            stacked: true,
            grid: { display: false },
            // "11-28" under the bar; the tooltip names the whole day.
            ticks: {
              color: quiet,
              maxRotation: 0,
              maxTicksLimit: 10,
              callback(value) { return this.getLabelForValue(value).slice(5); },
            },
          },
          y: {
            stacked: true,
            beginAtZero: true,
            grid: { color: hairline },
            ticks: { color: quiet, precision: chart.unit === "runs" ? 0 : undefined, callback: (value) => format(chart.unit, value) },
          },
        },
        plugins: {
          legend: { position: "bottom", labels: { color: quiet, boxWidth: 12 } },
          tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${format(chart.unit, item.parsed.y)}` } },
        },
      },
    });
  }
})();
