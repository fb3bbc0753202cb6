import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import pg from "pg";
import { applySchema, edition, rebuildAggregates } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { freePort } from "../pipeline/runtime/net.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { type Bench, type BenchRow, percentile } from "./lib.js";

// Issue 4's API benchmark. The API runs as its own process (dist/pipeline/
// cea-backend.js) on a fresh database cloned from a template (schema + site),
// loaded over loopback with autocannon; beside it, in the same run, a bare
// Fastify process with one route returning a constant: the framework's ceiling
// on this machine. Cases: single-row POST at 32 connections (group commit on,
// and the same server with it off, CEA_API_GROUP_MAX=1), batch POST, and a
// 30-day hourly history query (sequential, per-request latency). Every write
// request carries keys (sensor_id, time) no other request used, and the rows
// are counted afterwards. The load generator (autocannon) runs on this
// process's main thread, no worker threads: on a 2-core machine the servers,
// PostgreSQL and the generator share the cores, and extra generator threads
// would only take CPU from the server being measured.

interface AutocannonRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string;
  setupRequest?: (req: AutocannonRequest) => AutocannonRequest;
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

const DAY_MS = 86_400_000;
const HISTORY_SENSORS = [101, 102, 103, 104, 105];
const BATCH_SIZE = 1_000;
const BARE_SERVER = `import Fastify from "fastify";
const app = Fastify({ logger: false });
app.get("/", async () => ({ ok: true }));
app.post("/", async () => ({ ok: true }));
await app.listen({ host: "127.0.0.1", port: Number(process.env.PORT) });
process.on("SIGTERM", () => app.close().then(() => process.exit(0)));`;

function dbUrl(base: string, name: string): string {
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

async function withDb<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function admin<T>(base: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  return withDb(dbUrl(base, "postgres"), fn);
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

const bench: Bench = async (ctx) => {
  const duration = Math.max(2, Math.round(10 * ctx.scale));
  const historyRequests = Math.max(50, Math.round(300 * ctx.scale));
  // 1 reading a minute at scale 1 (more at larger scales, never coarser than 1/min)
  const stepS = Math.max(1, Math.round(60 / Math.max(1, ctx.scale)));
  const tag = randomBytes(3).toString("hex");
  const template = `cea_bench_api_tpl_${tag}`;
  const dbName = `cea_bench_api_${tag}`;
  const token = randomBytes(24).toString("base64url");
  const procs: ChildProcess[] = [];
  const rows: BenchRow[] = [];
  const params: Record<string, unknown> = {
    scale: ctx.scale,
    duration_s: duration,
    connections: 32,
    batch_size: BATCH_SIZE,
    history_requests: historyRequests,
    dataset: `${HISTORY_SENSORS.length} sensors × 30 days at one reading per ${stepS} s`,
  };

  try {
    ctx.log("template database: schema + site");
    await admin(ctx.databaseUrl, (c) => c.query(`CREATE DATABASE ${template}`));
    const t = new pg.Client({ connectionString: dbUrl(ctx.databaseUrl, template) });
    await t.connect();
    try {
      await applySchema(t);
      await syncSite(t, await loadSite(projectPath("ops/site.json")));
    } finally {
      await t.end();
    }
    // TimescaleDB's scheduler may still be connected to the template for a moment
    await admin(ctx.databaseUrl, async (c) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await c.query(`CREATE DATABASE ${dbName} TEMPLATE ${template}`);
        } catch (err) {
          if (attempt > 100 || (err as { code?: string }).code !== "55006") throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    });
    const url = dbUrl(ctx.databaseUrl, dbName);

    const db = new pg.Client({ connectionString: url });
    await db.connect();
    const end = new Date(Math.floor(Date.now() / DAY_MS) * DAY_MS - DAY_MS);
    const start = new Date(end.getTime() - 30 * DAY_MS);
    try {
      ctx.log(`data set: ${params.dataset}`);
      const ins = await db.query(
        `INSERT INTO measurement (time, sensor_id, value, status)
         SELECT t, s, 20 + 5 * sin(extract(epoch FROM t) / 3600.0 + s), 'ok'
         FROM unnest($1::int[]) s, generate_series($2::timestamptz, $3::timestamptz - INTERVAL '1 second', $4 * INTERVAL '1 second') t`,
        [HISTORY_SENSORS, start.toISOString(), end.toISOString(), stepS],
      );
      params.dataset_rows = ins.rowCount;
      const ed = await edition(db);
      params.edition = ed;
      await rebuildAggregates(db);
      await db.query("ANALYZE");
    } finally {
      await db.end();
    }

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

    // every request a new key: sensors 101..150 round robin, one second apart;
    // each run its own time range
    const sensors = Array.from({ length: 50 }, (_, i) => 101 + Math.floor(i / 10) * 100 + (i % 10));
    const singleRun = async (base: string, t0: number) => {
      let n = 0;
      return checked(
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
            },
          ],
        }),
      );
    };
    const written = async (from: string, to: string) =>
      withDb(url, async (c) => {
        const { rows: r } = await c.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM measurement WHERE time >= $1 AND time < $2",
          [from, to],
        );
        return r[0]?.n ?? 0;
      });

    ctx.log(`single-row POST, group commit off (one statement per request), 32 connections, ${duration} s`);
    const soloRes = await singleRun(soloBase, Date.parse("2023-01-01T00:00:00Z"));
    ctx.log(`single-row POST, 32 connections, ${duration} s`);
    const single = await singleRun(apiBase, Date.parse("2023-06-01T00:00:00Z"));
    // every answered request stored its own new row (201); a request cut off
    // when the run ended may have stored one more
    params.single_rows_written = await written("2023-06-01T00:00:00Z", "2023-12-31T00:00:00Z");
    params.single_2xx = single["2xx"];
    if ((params.single_rows_written as number) < single["2xx"])
      throw new Error(`single POST: ${single["2xx"]} answered 2xx but ${params.single_rows_written} rows stored`);
    rows.push({
      case: "single-row POST, group commit off",
      value: soloRes.requests.average,
      unit: "req/s",
      note: `CEA_API_GROUP_MAX=1, 8 statements at a time; p99 ${soloRes.latency.p99} ms`,
    });
    rows.push({
      case: "single-row POST",
      value: single.requests.average,
      unit: "req/s",
      baseline: "bare Fastify POST (ceiling)",
      ratio: single.requests.average / ceiling.requests.average,
      target: ">= 5000 req/s",
      met: single.requests.average >= 5000,
    });
    rows.push({
      case: "single-row POST vs group commit off",
      value: single.requests.average / soloRes.requests.average,
      unit: "x",
      baseline: "single-row POST, group commit off",
      ratio: single.requests.average / soloRes.requests.average,
    });
    rows.push({
      case: "single-row POST p99",
      value: single.latency.p99,
      unit: "ms",
      baseline: "bare Fastify POST p99",
      ratio: single.latency.p99 / Math.max(ceiling.latency.p99, 0.001),
      target: "< 20 ms",
      met: single.latency.p99 < 20,
      note: "ratio = API p99 / ceiling p99 (higher is slower)",
    });

    ctx.log(`batch POST of ${BATCH_SIZE}, 4 connections, ${duration} s`);
    const t1 = Date.parse("2022-01-01T00:00:00Z");
    let b = 0;
    const batch = checked(
      "batch POST",
      await autocannon({
        url: `${apiBase}/api/v1/measurements`,
        connections: 4,
        duration,
        requests: [
          {
            method: "POST",
            headers: auth,
            setupRequest: (req) => {
              const k = b++;
              const items = [];
              for (let j = 0; j < BATCH_SIZE; j++) {
                const i = k * BATCH_SIZE + j;
                items.push({
                  time: new Date(t1 + Math.floor(i / sensors.length) * 1000).toISOString(),
                  sensor_id: sensors[i % sensors.length],
                  value: (i % 1000) / 10,
                });
              }
              return { ...req, body: JSON.stringify(items) };
            },
          },
        ],
      }),
    );
    const perSecond = (batch["2xx"] * BATCH_SIZE) / batch.duration;
    params.batch_rows_written = await written("2022-01-01T00:00:00Z", "2023-01-01T00:00:00Z");
    if ((params.batch_rows_written as number) < batch["2xx"] * BATCH_SIZE)
      throw new Error(`batch POST: ${batch["2xx"]} batches answered 2xx but ${params.batch_rows_written} rows stored`);
    rows.push({
      case: "batch POST measurements",
      value: perSecond,
      unit: "measurements/s",
      baseline: "bare Fastify POST (ceiling)",
      ratio: perSecond / ceiling.requests.average,
      target: ">= 100000 measurements/s",
      met: perSecond >= 100_000,
      note: `${BATCH_SIZE} per request, p99 ${batch.latency.p99} ms; ratio = measurements/s over ceiling req/s`,
    });

    ctx.log(`history: 30 days hourly, ${historyRequests} sequential requests`);
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
    rows.push({ case: "history 30 d hourly p50", value: p50, unit: "ms" });
    rows.push({
      case: "history 30 d hourly p95",
      value: p95,
      unit: "ms",
      baseline: "bare Fastify GET p95 (sequential)",
      ratio: p95 / bareP95,
      target: "< 20 ms",
      met: p95 < 20,
      note: "720 points per answer; ratio = API p95 / ceiling p95 (higher is slower)",
    });
    params.note = "shared 2-core machine with other work running: figures are indicative";
    params.load_generator =
      "autocannon on the bench process's main thread (no workers); servers in their own processes";
    return { rows, params };
  } finally {
    await Promise.allSettled(procs.map(stop));
    await admin(ctx.databaseUrl, async (c) => {
      await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await c.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
    });
  }
};

export default bench;
