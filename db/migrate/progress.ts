// Progress of a long run on stderr: a redrawn bar with rate and ETA when a
// person watches (a TTY), plain lines at most every few seconds otherwise (logs).

export interface ProgressSink {
  start(total: number, label: string): void;
  update(done: number, measurements: number, note: string): void;
  finish(): void;
  line(msg: string): void;
}

const dur = (s: number) => {
  if (!Number.isFinite(s)) return "?";
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
};
const num = (n: number) =>
  n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${Math.round(n / 1e3)}k` : String(Math.round(n));

export function createProgress(out: NodeJS.WriteStream = process.stderr, now = () => Date.now()): ProgressSink {
  const tty = out.isTTY === true;
  let total = 0;
  let label = "";
  let t0 = 0;
  let lastDraw = 0;
  let drawn = false;
  let last = { done: 0, measurements: 0, note: "" };

  const render = () => {
    const elapsed = (now() - t0) / 1000;
    const frac = total > 0 ? Math.min(1, last.done / total) : 1;
    const rate = elapsed > 0 ? last.done / elapsed : 0;
    const mrate = elapsed > 0 ? last.measurements / elapsed : 0;
    const eta = rate > 0 ? Math.max(0, total - last.done) / rate : Number.POSITIVE_INFINITY;
    return {
      frac,
      text: `${(frac * 100).toFixed(1).padStart(5)}% ${num(last.done)}/${num(total)} ${label}  ${num(rate)}/s${mrate > 0 ? `, ${num(mrate)} measurements/s` : ""}  elapsed ${dur(elapsed)}  ETA ${dur(eta)}  ${last.note}`,
    };
  };

  return {
    start(t, l) {
      total = t;
      label = l;
      t0 = now();
      lastDraw = 0;
    },
    update(done, measurements, note) {
      last = { done, measurements, note };
      const at = now();
      if (tty) {
        if (at - lastDraw < 100 && done < total) return;
        const { frac, text } = render();
        const width = 24;
        const filled = Math.round(frac * width);
        const cols = out.columns ?? 120;
        out.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}`.slice(0, cols - 1).padEnd(cols - 1));
        drawn = true;
      } else {
        if (at - lastDraw < 2000 && done < total) return;
        out.write(`${render().text}\n`);
      }
      lastDraw = at;
    },
    finish() {
      if (tty && drawn) out.write("\n");
      drawn = false;
    },
    line(msg) {
      if (tty && drawn) {
        out.write("\n");
        drawn = false;
      }
      out.write(`${msg}\n`);
    },
  };
}
