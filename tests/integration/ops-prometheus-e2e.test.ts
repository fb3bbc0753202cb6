import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Site } from "../../db/site.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { freePort, killAll, pipelineEnv, type Service, spawnService, waitUntil } from "../support/procs.js";
import { findPrometheus } from "../support/prometheus.js";
import { parseExposition } from "../support/scrape.js";

// Debian's Prometheus against the running services on loopback, with the
// shipped ops/prometheus/prometheus.yml (its targets moved to this test's
// ports, its intervals shortened) and the shipped alert rules unchanged:
// every target comes up, a sensor the pipeline no longer stores fires
// CeaSensorSilent through Prometheus' API while the others do not, and every
// expression of the pipeline-health dashboard is a valid query over metrics
// the services really export.

const tools = findPrometheus();
const missing = "missing" in tools ? tools.missing : null;
if (missing) {
  if (process.env.CI === "true") throw new Error(`the Prometheus end-to-end test cannot run: ${missing}`);
  process.stdout.write(`\n[cea] ops-prometheus-e2e DOES NOT RUN: ${missing}\n\n`);
}

const SILENCED = "co2_v";
const JOBS = ["can-scanner", "can-worker", "cea-backend", "automation-service"] as const;

let db: TestDatabase;
let dir: string;
let prom: ChildProcess | undefined;
let promUrl: string;
const ports: Record<string, number> = {};
const services: Service[] = [];

/** What the services said, for a failure message. */
const tails = () =>
  services.map((s) => `--- ${s.name} ${s.exit ? JSON.stringify(s.exit) : "running"}\n${s.tail(15)}`).join("\n");

async function promApi<T>(path: string): Promise<T> {
  const res = await fetch(`${promUrl}/api/v1/${path}`);
  const body = (await res.json()) as { status: string; data: T; error?: string };
  if (body.status !== "success") throw new Error(`${path}: ${body.error ?? res.status}`);
  return body.data;
}

describe.skipIf(missing !== null)("Prometheus against the running services", () => {
  beforeAll(async () => {
    const bin = "prometheus" in tools ? tools : null;
    if (!bin) return;
    db = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), "cea-prom-"));
    // the pipeline's site file without one sensor: the database still knows it, nothing stores it any more
    const site = JSON.parse(readFileSync(projectPath("ops/site.json"), "utf8")) as Site;
    for (const d of site.devices) d.sensors = d.sensors.filter((s) => s.name !== SILENCED);
    const siteFile = join(dir, "site.json");
    writeFileSync(siteFile, JSON.stringify(site));

    for (const j of [...JOBS, "prometheus", "api"]) ports[j] = await freePort();
    const prefix = testPrefix();
    const env = pipelineEnv({
      databaseUrl: db.url,
      redisUrl: inject("redisUrl"),
      prefix,
      extra: {
        CEA_SITE_FILE: siteFile,
        CEA_CAN_SOURCE: "simulator",
        CEA_SCANNER_METRICS_PORT: ports["can-scanner"]!,
        CEA_WORKER_METRICS_PORT: ports["can-worker"]!,
        CEA_BACKEND_METRICS_PORT: ports["cea-backend"]!,
        CEA_AUTOMATION_METRICS_PORT: ports["automation-service"]!,
        CEA_HTTP_PORT: ports.api!,
        CEA_API_TOKEN: "t".repeat(24),
        CEA_ALERT_EVAL_MS: 1000,
        CEA_LOG_LEVEL: "info",
      },
    });
    services.push(
      spawnService("can-worker", env),
      spawnService("can-scanner", env),
      spawnService("cea-backend", env),
      spawnService("automation-service", env, ["--dry-run"]),
    );

    // the shipped configuration, pointed at this test's ports and scraped every second
    let config = readFileSync(projectPath("ops/prometheus/prometheus.yml"), "utf8");
    const shipped: Record<string, number> = {
      "can-scanner": 9481,
      "can-worker": 9482,
      "cea-backend": 9483,
      "automation-service": 9484,
    };
    for (const [job, port] of Object.entries(shipped)) {
      const target = `"127.0.0.1:${port}"`;
      expect(config.split(target).length - 1, `${job} target in prometheus.yml`).toBe(1);
      config = config.replace(target, `"127.0.0.1:${ports[job]}"`);
    }
    config = config
      .replace(/scrape_interval: 15s/, "scrape_interval: 1s")
      .replace(/scrape_timeout: 10s/, "scrape_timeout: 1s")
      .replace(/evaluation_interval: 15s/, "evaluation_interval: 1s");
    writeFileSync(join(dir, "prometheus.yml"), config);
    writeFileSync(join(dir, "cea-alerts.yml"), readFileSync(projectPath("ops/prometheus/cea-alerts.yml")));
    promUrl = `http://127.0.0.1:${ports.prometheus}`;
    prom = spawn(
      bin.prometheus,
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${ports.prometheus}`,
        "--storage.tsdb.retention.time=1h",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let promLog = "";
    prom.stderr?.on("data", (d: Buffer) => {
      promLog = (promLog + d.toString()).slice(-4000);
    });
    await waitUntil(
      `Prometheus ready on ${promUrl} (${promLog})`,
      async () => ((await fetch(`${promUrl}/-/ready`).catch(() => null))?.ok ? true : undefined),
      30_000,
      250,
    );
  }, 120_000);

  afterAll(async () => {
    if (prom && prom.exitCode === null) {
      prom.kill("SIGTERM");
      await new Promise((r) => prom?.once("exit", r));
    }
    await killAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await db?.drop();
  });

  it("every service's target is up", async () => {
    const up = await waitUntil(
      "every target up",
      async () => {
        const t = await promApi<{ activeTargets: { labels: { job: string }; health: string; lastError: string }[] }>(
          "targets",
        );
        const byJob = new Map(t.activeTargets.map((x) => [x.labels.job, x]));
        return JOBS.every((j) => byJob.get(j)?.health === "up") ? byJob : undefined;
      },
      60_000,
      500,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${tails()}`);
    });
    for (const j of JOBS) expect(up.get(j)?.lastError, j).toBe("");
  }, 90_000);

  it("the silenced sensor fires CeaSensorSilent through Prometheus; the reporting ones do not", async () => {
    interface Alert {
      labels: Record<string, string>;
      state: string;
    }
    const firing = await waitUntil(
      `CeaSensorSilent for ${SILENCED} firing`,
      async () => {
        const a = await promApi<{ alerts: Alert[] }>("alerts");
        const silent = a.alerts.filter((x) => x.labels.alertname === "CeaSensorSilent" && x.state === "firing");
        return silent.some((x) => x.labels.sensor === SILENCED) ? silent : undefined;
      },
      90_000,
      1_000,
    );
    expect(firing.map((x) => x.labels.sensor)).toEqual([SILENCED]);
    expect(firing[0]!.labels).toMatchObject({ room: "Veg Room", kind: "co2", severity: "warning", job: "cea-backend" });
    // the readings flow: the rest of the room is fresh in Prometheus too
    const fresh = await promApi<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(
      `query?query=${encodeURIComponent('cea_sensor_last_reading_age_seconds{sensor="dry_bulb_v"}')}`,
    );
    expect(Number(fresh.result[0]!.value[1])).toBeLessThan(10);
  }, 120_000);

  it("every expression of the pipeline-health dashboard is a valid query over metrics the services export", async () => {
    // one request, so the API's request-duration histogram has a series
    expect((await fetch(`http://127.0.0.1:${ports.api}/api/v1/health`)).status).toBe(200);
    const exported = new Set<string>(["up"]);
    for (const j of JOBS) {
      const text = await (await fetch(`http://127.0.0.1:${ports[j]}/metrics`)).text();
      for (const s of parseExposition(text)) exported.add(s.name.replace(/_(bucket|sum|count)$/, ""));
    }
    const dash = JSON.parse(readFileSync(projectPath("ops/grafana/dashboards/cea-pipeline.json"), "utf8")) as {
      panels: { title: string; targets?: { expr: string }[] }[];
    };
    const unknown: string[] = [];
    let n = 0;
    for (const p of dash.panels)
      for (const t of p.targets ?? []) {
        await promApi(`query?query=${encodeURIComponent(t.expr)}`);
        n++;
        for (const m of t.expr.matchAll(/\b((?:cea|process|nodejs|http)_[a-z0-9_]+)/g)) {
          const name = m[1]!.replace(/_(bucket|sum|count)$/, "");
          if (!exported.has(name)) unknown.push(`${p.title}: ${name}`);
        }
      }
    expect(n).toBeGreaterThan(20);
    expect(unknown).toEqual([]);
  });

  it("every metric an alert rule reads is exported by a service", async () => {
    const rules = readFileSync(projectPath("ops/prometheus/cea-alerts.yml"), "utf8");
    const exported = new Set<string>();
    for (const j of JOBS) {
      const text = await (await fetch(`http://127.0.0.1:${ports[j]}/metrics`)).text();
      for (const s of parseExposition(text)) exported.add(s.name);
    }
    const used = new Set(
      [...rules.matchAll(/^\s+expr: (.*)$/gm)].flatMap((m) =>
        [...m[1]!.matchAll(/\b(cea_[a-z0-9_]+)/g)].map((x) => x[1]!),
      ),
    );
    expect([...used].filter((u) => !exported.has(u))).toEqual([]);
  });
});
