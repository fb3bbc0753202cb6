import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { edition } from "../db/schema.js";
import { writeSchemas } from "../pipeline/backend/schemas.js";
import { freePort } from "../pipeline/runtime/net.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { datasetValue, ensureDataset } from "./api-dataset.js";
import { type Bench, type BenchRow, percentile } from "./lib.js";

// The API benchmark, on the data set the targets are stated for: 50 sensors ×
// 1 Hz × 30 days (about 130 M rows at scale 1; bench/api-dataset.ts loads it
// set-based once and keeps it for later runs). The API runs as its own
// process (dist/pipeline/cea-backend.js), loaded over loopback with
// autocannon; beside it, in the same run, a bare Fastify process with one
// route returning a constant: the framework's ceiling on this machine. Cases:
// single-row POST at 32 connections (group commit on, and the same server
// with it off, CEA_API_GROUP_MAX=1); batch POST of new readings (first
// writes) and of readings already stored, spread over the whole data set (a
// client retrying after a timeout: replay), whose rate must stay within 2× of
// the first writes'; a 30-day hourly history query (sequential,
// per-request latency); and one hour of raw history (3 600 points) in req/s,
// for a sensor without a value table and, on a second server, the same
// sensor with one that names every stored value (a label on every point),
// plus, when CEA_BENCH_BASELINE_DIST names the dist/ of an earlier build
// (e.g. the commit before value labels), the same request on that build, and
// the first-write batches on it too, rounds alternating with this build's.
// Every first write carries keys no other request used
// and lands in the day after the data set, which is dropped afterwards, so the
// data set stays as loaded. The load generator (autocannon) runs on this
// process's main thread: on a 2-core machine the servers, PostgreSQL and the
// generator share the cores, and extra generator threads would only take CPU
// from the server being measured.

interface AutocannonRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string;
  setupRequest?: (req: AutocannonRequest) => AutocannonRequest;
  onResponse?: (status: number, body: string) => void;
}
interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  "2xx": number;
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number };
}
type Autocannon = (opts: {
  url: string;
  connections: number;
  duration: number;
  pipelining?: number;
  requests?: AutocannonRequest[];
  method?: string;
  headers?: Record<string, string>;
  body?: string;
}) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

const HISTORY_SENSORS = [101, 102, 103, 104, 105];
const BATCH_SIZE = 1_000;
const BARE_SERVER = `import Fastify from "fastify";
const app = Fastify({ logger: false });
app.get("/", async () => ({ ok: true }));
app.post("/", async () => ({ ok: true }));
await app.listen({ host: "127.0.0.1", port: Number(process.env.PORT) });
process.on("SIGTERM", () => app.close().then(() => process.exit(0)));`;

async function withDb<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function waitForHttp(url: string, proc: ChildProcess, out: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`server exited (${proc.exitCode}): ${out()}`);
    try {
      await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`server at ${url} did not come up: ${out()}`);
}

function startProcess(args: string[], env: NodeJS.ProcessEnv): { proc: ChildProcess; out: () => string } {
  let out = "";
  const proc = spawn(process.execPath, args, { cwd: projectPath("."), env, stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout?.on("data", (d) => {
    out = (out + d).slice(-4000);
  });
  proc.stderr?.on("data", (d) => {
    out = (out + d).slice(-4000);
  });
  return { proc, out: () => out };
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const done = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await done;
  clearTimeout(timer);
}

/** Sequential requests; per-request latency in ms. */
async function latencies(url: string, n: number, headers: Record<string, string>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await fetch(url, { headers });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
    out.push(performance.now() - t);
  }
  return out;
}

const checked = (what: string, r: AutocannonResult) => {
  if (r.errors || r.timeouts || r.non2xx)
    throw new Error(`${what}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx responses`);
  return r;
};

/**
 * ops/cea.kcd with a value table on sensor 101's signal (Climate_N1.dry_bulb,
 * int16 × 0.01) naming every value the data set stores (k / 10 for k in
 * 0…999): the worst case, a label on every point.
 */
function labelledKcd(dir: string): string {
  const kcd = readFileSync(projectPath("ops/cea.kcd"), "utf8");
  const at = kcd.indexOf('<Signal name="dry_bulb"', kcd.indexOf('name="Climate_N1"'));
  const end = kcd.indexOf("</Signal>", at);
  if (at < 0 || end < 0) throw new Error("ops/cea.kcd: Climate_N1.dry_bulb not found");
  const labels = Array.from({ length: 1000 }, (_, k) => `<Label name="state ${k}" value="${k * 10}"/>`).join("");
  const file = join(dir, "cea-labelled.kcd");
  writeFileSync(file, `${kcd.slice(0, end)}<LabelSet>${labels}</LabelSet>${kcd.slice(end)}`);
  return file;
}

const bench: Bench = async (ctx) => {
  const duration = Math.max(2, Math.round(10 * ctx.scale));
  const historyRequests = Math.max(50, Math.round(300 * ctx.scale));
  const days = Math.max(1, Math.round(30 * ctx.scale));
  const token = randomBytes(24).toString("base64url");
  const tag = randomBytes(3).toString("hex");
  const procs: ChildProcess[] = [];
  const rows: BenchRow[] = [];
  const tmp = mkdtempSync(join(tmpdir(), "cea-bench-api-"));

  const ds = await ensureDataset(ctx.databaseUrl, days, ctx.log);
  const url = ds.url;
  const start = ds.start;
  const end = ds.end;
  const sensors = ds.sensors;
  const params: Record<string, unknown> = {
    scale: ctx.scale,
    duration_s: duration,
    connections: 32,
    batch_size: BATCH_SIZE,
    history_requests: historyRequests,
    dataset: `${sensors.length} sensors × 1 Hz × ${days} days, ${start.toISOString()} – ${end.toISOString()}`,
    dataset_rows: ds.rows,
    dataset_reused: ds.reused,
    dataset_load_s: Math.round(ds.loadSeconds),
    dataset_aggregates_s: ds.aggregateSeconds === null ? null : Math.round(ds.aggregateSeconds),
    load_average_at_start: loadavg().map((l) => Math.round(l * 100) / 100),
  };
  // first writes go to the day after the data set, dropped again at the end
  const writeDay = end.getTime();
  const dropWrites = () =>
    withDb(url, async (c) => {
      await c.query("SELECT drop_chunks('measurement', newer_than => $1::timestamptz)", [end]);
      await c.query("DELETE FROM measurement_agg_pending WHERE bucket >= $1", [end]);
      if ((await edition(c)) === "community") {
        await c.query("CALL refresh_continuous_aggregate('measurement_hourly', $1::timestamptz, NULL)", [end]);
        await c.query("CALL refresh_continuous_aggregate('measurement_daily', $1::timestamptz, NULL)", [end]);
      } else {
        await c.query("DELETE FROM measurement_hourly WHERE bucket >= $1", [end]);
        await c.query("DELETE FROM measurement_daily WHERE bucket >= $1", [end]);
      }
    });

  try {
    await dropWrites();
    await withDb(url, async (c) => {
      params.edition = await edition(c);
      const { rows: ch } = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM show_chunks('measurement')");
      params.chunks = ch[0]?.n;
    });

    const apiPort = await freePort();
    const apiEnv = {
      PATH: process.env.PATH,
      CEA_DATABASE_URL: url,
      CEA_REDIS_URL: ctx.redisUrl,
      CEA_REDIS_PREFIX: `bench:api:${tag}:`,
      CEA_API_TOKEN: token,
      CEA_HTTP_HOST: "127.0.0.1",
      CEA_HTTP_PORT: String(apiPort),
      CEA_LOG_LEVEL: "warn",
      CEA_BATCH_MAX: String(BATCH_SIZE),
      CEA_BODY_LIMIT: String(4 * 1024 * 1024),
    };
    const api = startProcess([projectPath("dist/pipeline/cea-backend.js")], apiEnv);
    procs.push(api.proc);
    // the same server with group commit off: one statement per request, up to 8 at a time
    const soloPort = await freePort();
    const solo = startProcess([projectPath("dist/pipeline/cea-backend.js")], {
      ...apiEnv,
      CEA_HTTP_PORT: String(soloPort),
      CEA_API_GROUP_MAX: "1",
      CEA_API_GROUP_INFLIGHT: "8",
    });
    procs.push(solo.proc);
    const barePort = await freePort();
    const bare = startProcess(["--input-type=module", "-e", BARE_SERVER], {
      PATH: process.env.PATH,
      PORT: String(barePort),
    });
    procs.push(bare.proc);
    const apiBase = `http://127.0.0.1:${apiPort}`;
    const bareBase = `http://127.0.0.1:${barePort}`;
    const soloBase = `http://127.0.0.1:${soloPort}`;
    // the earlier build, when given, on the same database: the batch and raw-history cases run on both, alternating
    const baselineDist = process.env.CEA_BENCH_BASELINE_DIST;
    let beforeBase: string | undefined;
    if (baselineDist) {
      const beforePort = await freePort();
      const before = startProcess([join(baselineDist, "pipeline/cea-backend.js")], {
        ...apiEnv,
        CEA_HTTP_PORT: String(beforePort),
      });
      procs.push(before.proc);
      beforeBase = `http://127.0.0.1:${beforePort}`;
      await waitForHttp(`${beforeBase}/api/v1/health`, before.proc, before.out);
      params.baseline_dist = baselineDist;
    }
    await waitForHttp(`${apiBase}/api/v1/health`, api.proc, api.out);
    await waitForHttp(`${soloBase}/api/v1/health`, solo.proc, solo.out);
    await waitForHttp(bareBase, bare.proc, bare.out);
    const auth = { authorization: `Bearer ${token}`, "content-type": "application/json" };

    ctx.log(`ceiling: bare Fastify, 32 connections, ${duration} s`);
    const ceiling = checked(
      "bare",
      await autocannon({ url: bareBase, connections: 32, duration, method: "POST", headers: auth, body: "{}" }),
    );
    rows.push({ case: "bare Fastify POST (ceiling)", value: ceiling.requests.average, unit: "req/s" });
    rows.push({ case: "bare Fastify POST p99", value: ceiling.latency.p99, unit: "ms" });

    // every request a new key: the data set's sensors round robin, one second apart, from t0
    const singleRun = async (base: string, t0: number) => {
      let n = 0;
      const statuses: Record<number, number> = {};
      const r = checked(
        "single POST",
        await autocannon({
          url: `${base}/api/v1/measurement`,
          connections: 32,
          duration,
          requests: [
            {
              method: "POST",
              headers: auth,
              setupRequest: (req) => {
                const i = n++;
                const body = {
                  time: new Date(t0 + Math.floor(i / sensors.length) * 1000).toISOString(),
                  sensor_id: sensors[i % sensors.length],
                  value: (i % 1000) / 10,
                  status: "ok",
                };
                return { ...req, body: JSON.stringify(body) };
              },
              onResponse: (status) => {
                statuses[status] = (statuses[status] ?? 0) + 1;
              },
            },
          ],
        }),
      );
      return { r, statuses };
    };
    const written = async (from: number, to: number) =>
      withDb(url, async (c) => {
        const { rows: r } = await c.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM measurement WHERE time >= $1 AND time < $2",
          [new Date(from), new Date(to)],
        );
        return r[0]?.n ?? 0;
      });

    const H = 3_600_000;
    ctx.log(`single-row POST, group commit off (one statement per request), 32 connections, ${duration} s`);
    const soloRes = await singleRun(soloBase, writeDay);
    ctx.log(`single-row POST, 32 connections, ${duration} s`);
    const single = await singleRun(apiBase, writeDay + 6 * H);
    // every answered request stored its own new row (201); a request cut off
    // when the run ended may have stored one more
    params.single_rows_written = await written(writeDay + 6 * H, writeDay + 12 * H);
    params.single_statuses = single.statuses;
    if (
      (params.single_rows_written as number) < (single.statuses[201] ?? 0) ||
      single.r["2xx"] !== single.statuses[201]
    )
      throw new Error(
        `single POST: answers ${JSON.stringify(single.statuses)} but ${params.single_rows_written} rows stored`,
      );
    rows.push({
      case: "single-row POST, group commit off",
      value: soloRes.r.requests.average,
      unit: "req/s",
      note: `CEA_API_GROUP_MAX=1, 8 statements at a time; p99 ${soloRes.r.latency.p99} ms`,
    });
    rows.push({
      case: "single-row POST",
      value: single.r.requests.average,
      unit: "req/s",
      baseline: "bare Fastify POST (ceiling)",
      ratio: single.r.requests.average / ceiling.requests.average,
      target: ">= 5000 req/s",
      met: single.r.requests.average >= 5000,
    });
    rows.push({
      case: "single-row POST vs group commit off",
      value: single.r.requests.average / soloRes.r.requests.average,
      unit: "x",
      baseline: "single-row POST, group commit off",
      ratio: single.r.requests.average / soloRes.r.requests.average,
    });
    rows.push({
      case: "single-row POST p99",
      value: single.r.latency.p99,
      unit: "ms",
      baseline: "bare Fastify POST p99",
      ratio: single.r.latency.p99 / Math.max(ceiling.latency.p99, 0.001),
      target: "< 20 ms",
      met: single.r.latency.p99 < 20,
      note: "ratio = API p99 / ceiling p99 (higher is slower)",
    });

    /** A batch run: `batchAt(k)` gives the first instant (ms) of the k-th batch; 50 sensors × 20 s each. */
    const batchRun = async (
      what: string,
      base: string,
      runDuration: number,
      batchAt: (k: number) => number,
      value: (s: number, t: number) => number,
    ) => {
      let b = 0;
      const statuses: Record<number, number> = {};
      let inserted = 0;
      const r = checked(
        what,
        await autocannon({
          url: `${base}/api/v1/measurements`,
          connections: 4,
          duration: runDuration,
          requests: [
            {
              method: "POST",
              headers: auth,
              setupRequest: (req) => {
                const t0 = batchAt(b++);
                const items = [];
                for (let j = 0; j < BATCH_SIZE; j++) {
                  const t = t0 + Math.floor(j / sensors.length) * 1000;
                  const s = sensors[j % sensors.length]!;
                  items.push({ time: new Date(t).toISOString(), sensor_id: s, value: value(s, t / 1000) });
                }
                return { ...req, body: JSON.stringify(items) };
              },
              onResponse: (status, body) => {
                statuses[status] = (statuses[status] ?? 0) + 1;
                if (status < 300) inserted += (JSON.parse(body) as { inserted: number }).inserted;
              },
            },
          ],
        }),
      );
      return { r, statuses, inserted, sent: b, perSecond: (r["2xx"] * BATCH_SIZE) / r.duration };
    };

    // whole seconds: the data set holds readings on whole seconds only (59 sensors do not divide 1 000)
    const perBatchS = Math.ceil(BATCH_SIZE / sensors.length);
    // first writes: batches numbered across every run (of either build), so no key is sent twice; with an
    // earlier build given, 3 rounds alternating between the builds, each round its own new keys
    const firstFrom = writeDay + 12 * H;
    let nextBatch = 0;
    const firstRun = async (base: string, runDuration: number) => {
      const from = nextBatch;
      const res = await batchRun(
        "batch POST",
        base,
        runDuration,
        (k) => firstFrom + (from + k) * perBatchS * 1000,
        (s, t) => datasetValue(s, t),
      );
      nextBatch = from + res.sent;
      if (firstFrom + nextBatch * perBatchS * 1000 > writeDay + 24 * H)
        throw new Error("batch POST: the first writes ran past the day after the data set; lower --scale");
      return res;
    };
    const compare = beforeBase !== undefined;
    const batchDuration = compare ? Math.max(5, duration) : duration;
    const batchRounds = compare ? 3 : 1;
    ctx.log(
      `batch POST of ${BATCH_SIZE} new readings (first writes), 4 connections, ${batchDuration} s` +
        (compare ? ` × ${batchRounds} rounds, alternating with the baseline build` : ""),
    );
    const firstRuns: Awaited<ReturnType<typeof batchRun>>[] = [];
    const beforeRuns: Awaited<ReturnType<typeof batchRun>>[] = [];
    for (let round = 0; round < batchRounds; round++) {
      // alternate which build goes first in a round, so neither always runs on a warmer table
      const order: [string, typeof firstRuns][] = [[apiBase, firstRuns]];
      if (beforeBase !== undefined) order.splice(round % 2, 0, [beforeBase, beforeRuns]);
      for (const [base, runs] of order) runs.push(await firstRun(base, batchDuration));
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const pooled = (runs: typeof firstRuns) => {
      const ok = sum(runs.map((x) => x.r["2xx"]));
      return {
        ok,
        inserted: sum(runs.map((x) => x.inserted)),
        perSecond: (ok * BATCH_SIZE) / sum(runs.map((x) => x.r.duration)),
        rounds: runs.map((x) => Math.round(x.perSecond)).join(", "),
      };
    };
    const first = { ...pooled(firstRuns), r: firstRuns[0]!.r };
    const firstBefore = pooled(beforeRuns);
    params.batch_rows_written = await written(firstFrom, writeDay + 24 * H);
    params.batch_statuses = firstRuns.map((x) => x.statuses);
    if (
      first.inserted !== first.ok * BATCH_SIZE ||
      firstBefore.inserted !== firstBefore.ok * BATCH_SIZE ||
      (params.batch_rows_written as number) < first.inserted + firstBefore.inserted
    )
      throw new Error(
        `batch POST: ${first.ok} + ${firstBefore.ok} (baseline) batches answered 2xx, ${first.inserted} + ${firstBefore.inserted} readings inserted, ${params.batch_rows_written} rows stored`,
      );
    const roundsNote = compare ? `; ${batchDuration} s × ${batchRounds} rounds alternating: ${first.rounds}` : "";
    if (beforeBase !== undefined)
      rows.push({
        case: `batch POST measurements (first writes), baseline build (${baselineDist})`,
        value: firstBefore.perSecond,
        unit: "measurements/s",
        note: `${BATCH_SIZE} per request, 4 connections, ${batchDuration} s × ${batchRounds} rounds alternating: ${firstBefore.rounds}`,
      });
    rows.push({
      case: "batch POST measurements (first writes)",
      value: first.perSecond,
      unit: "measurements/s",
      baseline: "bare Fastify POST (ceiling)",
      ratio: first.perSecond / ceiling.requests.average,
      target: ">= 100000 measurements/s",
      met: first.perSecond >= 100_000,
      note: `${BATCH_SIZE} per request, p50 ${first.r.latency.p50} ms, p99 ${first.r.latency.p99} ms (first round); ratio = measurements/s over ceiling req/s${roundsNote}`,
    });
    if (beforeBase !== undefined)
      rows.push({
        case: "batch POST measurements (first writes) vs baseline build",
        value: first.perSecond / firstBefore.perSecond,
        unit: "x",
        baseline: `batch POST measurements (first writes), baseline build (${baselineDist})`,
        ratio: first.perSecond / firstBefore.perSecond,
        target: ">= 0.90",
        met: first.perSecond / firstBefore.perSecond >= 0.9,
        note: "same database, data set and run; rounds alternating",
      });

    // a retry after a timeout: readings already stored, resent exactly; batches spread over
    // the whole data set in an order that jumps between days (a stride prime to the slot count)
    const slots = Math.floor((days * 86_400) / perBatchS);
    const stride = 7_919;
    // with an earlier build given, rounds alternate between the builds like the first writes; every run
    // continues the stride where the last one stopped, so no build replays batches another has just warmed
    ctx.log(
      `batch POST of ${BATCH_SIZE} stored readings (replay over ${days} days), 4 connections, ${batchDuration} s` +
        (compare ? ` × ${batchRounds} rounds, alternating with the baseline build` : ""),
    );
    let nextReplay = 0;
    const replayRuns: Awaited<ReturnType<typeof batchRun>>[] = [];
    const replayBefore: Awaited<ReturnType<typeof batchRun>>[] = [];
    for (let round = 0; round < batchRounds; round++) {
      const order: [string, typeof replayRuns][] = [[apiBase, replayRuns]];
      if (beforeBase !== undefined) order.splice(round % 2, 0, [beforeBase, replayBefore]);
      for (const [base, runs] of order) {
        const from = nextReplay;
        const res = await batchRun(
          "batch replay",
          base,
          batchDuration,
          (k) => start.getTime() + (((from + k) * stride) % slots) * perBatchS * 1000,
          (s, t) => datasetValue(s, t),
        );
        nextReplay = from + res.sent;
        if (res.inserted !== 0 || (res.statuses[200] ?? 0) !== res.r["2xx"])
          throw new Error(
            `batch replay: answers ${JSON.stringify(res.statuses)}, ${res.inserted} inserted (expected all 200, none)`,
          );
        runs.push(res);
      }
    }
    const replay = { ...pooled(replayRuns), r: replayRuns[0]!.r };
    params.replay_statuses = replayRuns.map((x) => x.statuses);
    const replayRounds = compare ? `; ${batchDuration} s × ${batchRounds} rounds alternating: ${replay.rounds}` : "";
    rows.push({
      case: "batch POST measurements (replay of stored readings)",
      value: replay.perSecond,
      unit: "measurements/s",
      baseline: "batch POST measurements (first writes)",
      ratio: replay.perSecond / first.perSecond,
      target: "within 2x of first writes (ratio >= 0.5)",
      met: replay.perSecond / first.perSecond >= 0.5,
      note: `every batch answered 200, nothing inserted; p50 ${replay.r.latency.p50} ms, p99 ${replay.r.latency.p99} ms (first round)${replayRounds}`,
    });
    if (beforeBase !== undefined) {
      const before = pooled(replayBefore);
      rows.push({
        case: `batch POST measurements (replay of stored readings), baseline build (${baselineDist})`,
        value: before.perSecond,
        unit: "measurements/s",
        note: `${batchDuration} s × ${batchRounds} rounds alternating: ${before.rounds}`,
      });
      rows.push({
        case: "batch POST measurements (replay) vs baseline build",
        value: replay.perSecond / before.perSecond,
        unit: "x",
        baseline: `batch POST measurements (replay of stored readings), baseline build (${baselineDist})`,
        ratio: replay.perSecond / before.perSecond,
        target: ">= 0.90",
        met: replay.perSecond / before.perSecond >= 0.9,
        note: "same database, data set and run; rounds alternating",
      });
    }

    // what validating a batch body costs: the schema's parse, and the route's quick path derived from it
    // (pipeline/backend/batch-quick.ts) on the worst case for it (every instant distinct) and on readings
    // of every sensor at shared instants (as the batch POST cases above send them)
    const { batchIn, batchQuick } = writeSchemas({
      CEA_TIME_FLOOR: "2000-01-01T00:00:00Z",
      CEA_FUTURE_TOLERANCE_S: 300,
      CEA_BATCH_MAX: BATCH_SIZE,
    });
    const bodiesOf = (instant: (k: number, j: number) => number) =>
      Array.from({ length: 20 }, (_, k) =>
        JSON.parse(
          JSON.stringify(
            Array.from({ length: BATCH_SIZE }, (_, j) => ({
              time: new Date(writeDay + instant(k, j) * 1000).toISOString().replace("Z", "+02:00"),
              sensor_id: sensors[j % sensors.length],
              value: j / 10,
              status: j % 2 ? "ok" : null,
            })),
          ),
        ),
      );
    const distinct = bodiesOf((k, j) => k * BATCH_SIZE + j);
    const shared = bodiesOf((k, j) => k * BATCH_SIZE + Math.floor(j / sensors.length));
    const msPerBody = (bodies: unknown[], parse: (b: unknown) => unknown) => {
      for (const b of bodies) if (parse(b) === undefined) throw new Error("batch validation: a body was not taken");
      const v0 = performance.now();
      for (let r = 0; r < 5; r++) for (const b of bodies) parse(b);
      return (performance.now() - v0) / (5 * bodies.length);
    };
    const validation: [string, number][] = [
      ["zod schema", msPerBody(distinct, (b) => batchIn.parse(b))],
      ["quick path, every instant distinct", msPerBody(distinct, batchQuick)],
      [`quick path, ${sensors.length} sensors per instant`, msPerBody(shared, batchQuick)],
    ];
    for (const [how, ms] of validation)
      rows.push({
        case: `batch body validation (${how}, ${BATCH_SIZE} items)`,
        value: ms,
        unit: "ms",
        baseline: "batch POST measurements (first writes)",
        ratio: ms / first.r.latency.p50,
        note: "ratio = validation time / first-write batch latency p50; times with an offset, converted to UTC by the schema",
      });

    ctx.log(`history: ${days} days hourly, ${historyRequests} sequential requests`);
    const q = `start=${start.toISOString()}&end=${end.toISOString()}&resolution=hourly`;
    await latencies(`${apiBase}/api/v1/sensors/101/history?${q}`, 10, auth);
    const hist: number[] = [];
    for (let i = 0; i < historyRequests; i++) {
      const sid = HISTORY_SENSORS[i % HISTORY_SENSORS.length];
      hist.push(...(await latencies(`${apiBase}/api/v1/sensors/${sid}/history?${q}`, 1, auth)));
    }
    const bareLat = await latencies(bareBase, historyRequests, {});
    const p50 = percentile(hist, 50);
    const p95 = percentile(hist, 95);
    const bareP95 = percentile(bareLat, 95);
    rows.push({ case: "bare Fastify GET p95 (sequential)", value: bareP95, unit: "ms" });
    rows.push({ case: `history ${days} d hourly p50`, value: p50, unit: "ms" });
    rows.push({
      case: `history ${days} d hourly p95`,
      value: p95,
      unit: "ms",
      baseline: "bare Fastify GET p95 (sequential)",
      ratio: p95 / bareP95,
      target: "< 20 ms",
      met: p95 < 20,
      note: `${days * 24} points per answer; ratio = API p95 / ceiling p95 (higher is slower)`,
    });
    // raw history, value labels: this build without and with a value table, and an earlier build if given
    const rawQ = `start=${start.toISOString()}&end=${new Date(start.getTime() + 3_600_000).toISOString()}&resolution=raw`;
    const labelledPort = await freePort();
    const labelled = startProcess([projectPath("dist/pipeline/cea-backend.js")], {
      ...apiEnv,
      CEA_HTTP_PORT: String(labelledPort),
      CEA_CAN_DB_FILE: labelledKcd(tmp),
    });
    procs.push(labelled.proc);
    const servers: { name: string; base: string }[] = [
      { name: "this build, no value table", base: apiBase },
      { name: "this build, value table (label on every point)", base: `http://127.0.0.1:${labelledPort}` },
    ];
    await waitForHttp(`${servers[1]!.base}/api/v1/health`, labelled.proc, labelled.out);
    if (beforeBase !== undefined) servers.unshift({ name: `baseline build (${baselineDist})`, base: beforeBase });
    const probe = await fetch(`${servers.at(-1)!.base}/api/v1/sensors/101/history?${rawQ}`, { headers: auth });
    const probed = (await probe.json()) as { points: { label?: string | null }[] };
    if (probed.points.length === 0 || probed.points.some((p) => typeof p.label !== "string"))
      throw new Error("raw history of the labelled server: not every point has a label");
    ctx.log(`raw history: 1 h (${probed.points.length} points), ${servers.length} servers, 3 rounds alternating`);
    const rawDuration = Math.max(5, duration);
    const rates = servers.map(() => [] as number[]);
    for (let round = 0; round < 3; round++)
      for (const [i, srv] of servers.entries()) {
        const r = checked(
          "raw history",
          await autocannon({
            url: `${srv.base}/api/v1/sensors/101/history?${rawQ}`,
            connections: 4,
            duration: rawDuration,
            headers: auth,
          }),
        );
        rates[i]!.push(r.requests.average);
      }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const base0 = servers[0]!;
    for (const [i, srv] of servers.entries())
      rows.push({
        case: `raw history 1 h (${probed.points.length} points), ${srv.name}`,
        value: mean(rates[i]!),
        unit: "req/s",
        ...(i === 0
          ? {}
          : {
              baseline: `raw history 1 h (${probed.points.length} points), ${base0.name}`,
              ratio: mean(rates[i]!) / mean(rates[0]!),
            }),
        note: `4 connections, ${rawDuration} s × 3 rounds alternating; rounds: ${rates[i]!.map((r) => Math.round(r)).join(", ")}`,
      });
    params.load_average_at_end = loadavg().map((l) => Math.round(l * 100) / 100);
    params.note = "shared 2-core machine with other work running: figures are indicative";
    params.load_generator =
      "autocannon on the bench process's main thread (no workers); servers in their own processes";
    return { rows, params };
  } finally {
    await Promise.allSettled(procs.map(stop));
    await dropWrites();
    rmSync(tmp, { recursive: true, force: true });
  }
};

export default bench;
