// The charts, drawn by uPlot: an asset's closes over the chosen range with the forecast
// band, and an account's equity over time.
//
// Prices become JavaScript numbers here and only here: a chart needs pixel
// positions. Every amount the page shows in text comes from the exact values.

const CLOSE = "#1a73e8";
const FORECAST = "#8a5a00";
const BAND = "rgba(138, 90, 0, 0.16)";
const EQUITY = "#137333";
const CASH = "#5f6368";

function seconds(timestamp) {
  return Number(timestamp.micros / 1000n) / 1000;
}

/** One uPlot chart that follows its element's width. */
class Chart {
  constructor(element) {
    this.element = element;
    this.plot = null;
    this.resize = new ResizeObserver(() => {
      if (this.plot !== null) this.plot.setSize(this.#size());
    });
    this.resize.observe(element);
  }

  #size() {
    const width = Math.max(240, this.element.clientWidth);
    return { width, height: width < 500 ? 240 : 320 };
  }

  /** Replace the plot: ``series`` after the time axis, ``data`` [xs, ...ys]; none without xs. */
  render(label, series, data, extra = {}) {
    if (this.plot !== null) this.plot.destroy();
    this.plot = null;
    this.element.replaceChildren();
    this.element.setAttribute("aria-label", label);
    if (data[0].length === 0) return;
    const options = {
      ...this.#size(),
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      series: [{ label: "Time (UTC)" }, ...series],
      axes: [{}, { size: 70 }],
      tzDate: (ts) => globalThis.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      ...extra,
    };
    this.plot = new globalThis.uPlot(options, data, this.element);
  }
}

export class PriceChart extends Chart {
  /** bars: records with period_start, close; forecast: null or {points: [{time, value, lower, upper}]}. */
  draw(bars, forecast, label) {
    const xs = [];
    const close = [];
    const value = [];
    const lower = [];
    const upper = [];
    for (const bar of bars) {
      xs.push(seconds(bar.period_start));
      close.push(bar.close.toNumberForPlotting());
      value.push(null);
      lower.push(null);
      upper.push(null);
    }
    const points = forecast ? forecast.points.filter((p) => xs.length === 0 || seconds(p.time) > xs[xs.length - 1]) : [];
    if (points.length > 0 && xs.length > 0) {
      const last = xs.length - 1;
      value[last] = lower[last] = upper[last] = close[last];
    }
    for (const point of points) {
      xs.push(seconds(point.time));
      close.push(null);
      value.push(point.value.toNumberForPlotting());
      lower.push(point.lower.toNumberForPlotting());
      upper.push(point.upper.toNumberForPlotting());
    }
    this.render(
      label,
      [
        { label: "Close", stroke: CLOSE, width: 2, spanGaps: false, points: { show: xs.length < 3 } },
        { label: "Forecast", stroke: FORECAST, width: 2, dash: [6, 4], points: { show: false } },
        { label: "Low", stroke: BAND, width: 1, points: { show: false } },
        { label: "High", stroke: BAND, width: 1, points: { show: false } },
      ],
      [xs, close, value, lower, upper],
      { bands: [{ series: [4, 3], fill: BAND }] },
    );
  }
}

export class EquityChart extends Chart {
  /** points: records with time, equity, cash (getEquityHistory's). */
  draw(points, label) {
    const xs = points.map((p) => seconds(p.time));
    const equity = points.map((p) => p.equity.toNumberForPlotting());
    const cash = points.map((p) => p.cash.toNumberForPlotting());
    const few = xs.length < 3;
    this.render(
      label,
      [
        { label: "Equity", stroke: EQUITY, width: 2, points: { show: few } },
        { label: "Cash", stroke: CASH, width: 1, dash: [4, 4], points: { show: few } },
      ],
      [xs, equity, cash],
    );
  }
}
