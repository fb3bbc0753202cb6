import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { closedPort, measurementCount, startApi } from "./api-harness.js";

// Dependencies down (pointed at closed ports on 127.0.0.1) and the server entry
// point run as a process from dist/ (build first: npx tsc -p .).

const ENTRY = projectPath("dist/pipeline/cea-backend.js");
const reading = { time: "2024-01-15T10:30:00Z", sensor_id: 101, value: 1 };

describe("a dependency down", () => {
  it("Redis unreachable: /health 503 naming redis, /live 503; writes still work", async () => {
    const api = await startApi({}, { redisUrl: `redis://127.0.0.1:${await closedPort()}` });
    try {
      const res = await api.app.inject({ url: "/api/v1/health" });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({
        status: "unavailable",
        down: ["redis"],
        postgres: { ok: true },
        redis: { ok: false, error: "unreachable" },
      });
      const live = await api.app.inject({ url: "/api/v1/live", headers: api.auth });
      expect(live.statusCode).toBe(503);
      expect(live.json()).toMatchObject({ error: "unavailable", message: expect.stringContaining("redis") });
      const w = await api.app.inject({
        method: "POST",
        url: "/api/v1/measurement",
        headers: api.auth,
        payload: reading,
      });
      expect(w.statusCode).toBe(201);
    } finally {
      await api.close();
    }
  });

  it("PostgreSQL unreachable: /health 503 naming postgres; reads and writes 503 without internals", async () => {
    const api = await startApi({}, { databaseUrl: `postgresql://postgres@127.0.0.1:${await closedPort()}/cea` });
    try {
      const res = await api.app.inject({ url: "/api/v1/health" });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({
        status: "unavailable",
        down: ["postgres"],
        postgres: { ok: false, error: "unreachable" },
        redis: { ok: true },
      });
      for (const req of [
        { method: "POST" as const, url: "/api/v1/measurement", payload: reading },
        { method: "POST" as const, url: "/api/v1/measurements", payload: [reading] },
        { method: "GET" as const, url: "/api/v1/sensors/101/history" },
        { method: "GET" as const, url: "/api/v1/facility" },
      ]) {
        const r = await api.app.inject({ ...req, headers: api.auth });
        expect(r.statusCode, req.url).toBe(503);
        const body = r.json();
        expect(body).toEqual({ error: "unavailable", message: "database unavailable", request_id: expect.any(String) });
        expect(r.headers["x-request-id"]).toBe(body.request_id);
        expect(r.body).not.toMatch(/ECONNREFUSED|127\.0\.0\.1/);
      }
      expect(await measurementCount(api.db)).toBe(0);
    } finally {
      await api.close();
    }
  });
});

function run(env: NodeJS.ProcessEnv): { child: ChildProcess; out: () => string; err: () => string } {
  let out = "";
  let err = "";
  const child = spawn(process.execPath, [ENTRY], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    err += d;
  });
  return { child, out: () => out, err: () => err };
}
const exited = (c: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (c.exitCode !== null) resolve(c.exitCode);
    else c.once("exit", (code) => resolve(code));
  });

describe("the cea-backend process", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: build first (npx tsc -p .)`);
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  const baseEnv = () => ({
    PATH: process.env.PATH,
    CEA_DATABASE_URL: db.url,
    CEA_REDIS_URL: inject("redisUrl"),
    CEA_REDIS_PREFIX: testPrefix(),
    CEA_HTTP_HOST: "127.0.0.1",
    CEA_LOG_LEVEL: "info",
  });

  it("refuses to start without CEA_API_TOKEN: non-zero exit naming the variable", async () => {
    const p = run({ ...baseEnv(), CEA_HTTP_PORT: String(await closedPort()) });
    const code = await exited(p.child);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(p.err()).toContain("CEA_API_TOKEN");
  });

  it("demo mode prints a generated token once; the token works; SIGTERM stops it with exit 0", async () => {
    const port = await closedPort();
    const p = run({ ...baseEnv(), CEA_DEMO: "true", CEA_HTTP_PORT: String(port) });
    try {
      let token: string | undefined;
      for (let i = 0; i < 100 && !token; i++) {
        token = /generated API token \(write routes\): (\S+)/.exec(p.out())?.[1];
        if (!token) await new Promise((r) => setTimeout(r, 100));
      }
      expect(token, p.err()).toBeDefined();
      let res: Response | undefined;
      for (let i = 0; i < 100 && !res; i++) {
        res = await fetch(`http://127.0.0.1:${port}/api/v1/measurement`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(reading),
        }).catch(async () => {
          await new Promise((r) => setTimeout(r, 100));
          return undefined;
        });
      }
      expect(res?.status).toBe(201);
      const denied = await fetch(`http://127.0.0.1:${port}/api/v1/measurement`, {
        method: "POST",
        headers: { authorization: "Bearer wrong-token-wrong-token", "content-type": "application/json" },
        body: JSON.stringify(reading),
      });
      expect(denied.status).toBe(401);
      p.child.kill("SIGTERM");
      expect(await exited(p.child)).toBe(0);
      // printed once, and never in a log line
      expect(p.out().split(token!).length - 1).toBe(1);
      expect(p.err()).not.toContain(token!);
      expect(p.out()).toContain('"url":"/api/v1/measurement"');
    } finally {
      if (p.child.exitCode === null) p.child.kill("SIGKILL");
    }
  });
});
