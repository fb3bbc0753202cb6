import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectPath, projectRoot } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

// The autostart and start scripts run against a stub systemctl that records
// its calls and answers is-enabled from a file: real systemd is not PID 1 in
// this sandbox, so this tests the scripts' logic, not systemd itself.

const SCRIPTS = [
  "ops/enable_autostart.sh",
  "ops/start_all_services.sh",
  "ops/monitor_can_db.sh",
  "ops/monitor_redis_backend.sh",
  "ops/monitor_common.sh",
  "ops/env_file.sh",
  "ops/stack.sh",
];
const UNITS = ["can-setup", "can-scanner", "can-worker", "cea-backend", "automation-service"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A temp dir with a stub systemctl: calls go to `calls`, enabled units are listed in `enabled`. */
function stubSystemd(): { dir: string; unitDir: string; calls: () => string[]; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), "cea-ops-"));
  const unitDir = join(dir, "units");
  mkdirSync(unitDir);
  writeFileSync(join(dir, "enabled"), "");
  writeFileSync(join(dir, "fail"), "");
  writeFileSync(
    join(dir, "systemctl"),
    `#!/bin/bash
echo "$*" >> "${dir}/calls"
case "$1" in
  is-enabled) if grep -qx "$2" "${dir}/enabled"; then echo enabled; else echo disabled; exit 1; fi ;;
  enable)
    if grep -qx "$2" "${dir}/fail"; then echo "Failed to enable unit: Access denied" >&2; exit 1; fi
    echo "Created symlink /etc/systemd/system/multi-user.target.wants/$2" >&2
    echo "$2" >> "${dir}/enabled" ;;
  start) if grep -qx "$2" "${dir}/fail"; then echo "Job for $2 failed." >&2; exit 1; fi ;;
  is-active) if grep -qx "$2" "${dir}/fail"; then echo failed; exit 3; fi; echo active ;;
  daemon-reload) ;;
  --version) echo "systemd \${STUB_SYSTEMD_VERSION:-252} (\${STUB_SYSTEMD_VERSION:-252}-1)"; echo "+PAM +SECCOMP" ;;
  *) echo "stub: unexpected $*" >&2; exit 1 ;;
esac
`,
  );
  chmodSync(join(dir, "systemctl"), 0o755);
  return {
    dir,
    unitDir,
    calls: () => (existsSync(join(dir, "calls")) ? readFileSync(join(dir, "calls"), "utf8").trim().split("\n") : []),
    env: { SYSTEMCTL: join(dir, "systemctl"), SYSTEMD_UNIT_PATH: unitDir },
  };
}

const installUnit = (unitDir: string, name: string, install = "[Install]\nWantedBy=multi-user.target\n") =>
  writeFileSync(
    join(unitDir, `${name}.service`),
    `[Unit]\nDescription=${name}\n[Service]\nExecStart=/bin/true\n${install}`,
  );

function installProjectUnits(unitDir: string): void {
  for (const u of UNITS) copyFileSync(projectPath(`ops/systemd/${u}.service`), join(unitDir, `${u}.service`));
}

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});
function stub() {
  const s = stubSystemd();
  tmpDirs.push(s.dir);
  return s;
}

describe("shell scripts", () => {
  it.each(SCRIPTS)("%s parses (bash -n)", async (script) => {
    const r = await run("bash", ["-n", projectPath(script)]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  const shellcheck = spawnSync("shellcheck", ["--version"]).status === 0;
  if (!shellcheck) process.stdout.write("[ops] shellcheck is not installed: the shellcheck test is skipped\n");
  it.skipIf(!shellcheck).each(SCRIPTS)("%s is clean under shellcheck", async (script) => {
    const r = await run("shellcheck", ["-x", projectPath(script)]);
    expect(r.stdout).toBe("");
    expect(r.code).toBe(0);
  });
});

/** [section] → key → values, from a unit file. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const head = /^\[([A-Za-z]+)\]$/.exec(line);
    if (head) {
      current = new Map();
      sections.set(head[1]!, current);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`not a unit-file line: ${raw}`);
    current.set(kv[1]!, [...(current.get(kv[1]!) ?? []), kv[2]!]);
  }
  return sections;
}

describe("systemd units", () => {
  const files = readdirSync(projectPath("ops/systemd")).filter((f) => f.endsWith(".service"));

  it("ships exactly the five services", () => {
    expect(files.sort()).toEqual(UNITS.map((u) => `${u}.service`).sort());
  });

  it.each(UNITS)("%s.service has valid sections, boot target, restart policy and its environment", (name) => {
    const unit = parseUnit(readFileSync(projectPath(`ops/systemd/${name}.service`), "utf8"));
    expect([...unit.keys()]).toEqual(["Unit", "Service", "Install"]);
    const svc = unit.get("Service")!;
    const one = (k: string) => svc.get(k)?.at(-1);
    expect(unit.get("Install")?.get("WantedBy")).toEqual(["multi-user.target"]);
    // the shared settings, then (node services) an optional file of the service's own, e.g. its database URL
    expect(svc.get("EnvironmentFile")).toEqual(
      name === "can-setup" ? ["/etc/cea/cea.env"] : ["/etc/cea/cea.env", `-/etc/cea/${name}.env`],
    );
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("PrivateTmp")).toBe("yes");
    if (name === "can-setup") {
      expect(one("Type")).toBe("oneshot");
      expect(one("RemainAfterExit")).toBe("yes");
      expect(one("ExecStart")).toContain('ip link set "$$CEA_CAN_INTERFACE" type can bitrate "$$CEA_CAN_BITRATE"');
      return;
    }
    expect(one("ExecStart")).toBe(`/usr/bin/node dist/pipeline/${name}.js`);
    expect(one("WorkingDirectory")).toBe("/opt/cea-telemetry");
    expect(one("User")).toBe("cea");
    expect(one("Restart")).toBe("always");
    expect(Number(one("RestartSec"))).toBeGreaterThan(0);
    // a crash loop never leaves the unit permanently failed (systemd's default gives up after 5 starts in 10 s)
    expect(unit.get("Unit")?.get("StartLimitIntervalSec")).toEqual(["0"]);
    expect(one("KillSignal")).toBe("SIGTERM");
    // longer than the services' own graceful-stop timeout (15 s, pipeline/runtime/shutdown.ts)
    expect(Number(one("TimeoutStopSec"))).toBeGreaterThan(15);
    const deps = [...(unit.get("Unit")?.get("After") ?? []), ...(unit.get("Unit")?.get("Wants") ?? [])].join(" ");
    expect(deps).toContain("redis-server.service");
    const families = (one("RestrictAddressFamilies") ?? "").split(/\s+/).sort();
    if (name === "can-scanner") {
      // it must keep running while PostgreSQL is down
      expect(deps).not.toContain("postgresql");
      expect(deps).toContain("can-setup.service");
      // the bus, and the spool for a stop while Redis is down
      expect(families).toEqual(["AF_CAN", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]);
      expect(one("StateDirectory")).toBe("cea");
    } else {
      expect(deps).toContain("postgresql.service");
      expect(families).toEqual(["AF_INET", "AF_INET6", "AF_UNIX"]);
    }
    // no capabilities at all, and no way to gain any
    expect(svc.get("CapabilityBoundingSet")).toEqual([""]);
    expect(one("NoNewPrivileges")).toBe("yes");
  });

  it("can-setup holds CAP_NET_ADMIN and nothing else, as an unprivileged user, on netlink only", () => {
    const svc = parseUnit(readFileSync(projectPath("ops/systemd/can-setup.service"), "utf8")).get("Service")!;
    expect(svc.get("DynamicUser")).toEqual(["yes"]);
    expect(svc.get("CapabilityBoundingSet")).toEqual(["CAP_NET_ADMIN"]);
    expect(svc.get("AmbientCapabilities")).toEqual(["CAP_NET_ADMIN"]);
    expect(svc.get("RestrictAddressFamilies")).toEqual(["AF_UNIX AF_NETLINK"]);
  });

  const analyze = spawnSync("systemd-analyze", ["--version"]).status === 0;
  if (!analyze) process.stdout.write("[ops] systemd-analyze is not installed: unit verification is skipped\n");
  it.skipIf(!analyze)("systemd-analyze verify accepts every unit without a warning", async () => {
    const r = await run("systemd-analyze", ["verify", ...files.map((f) => projectPath(`ops/systemd/${f}`))]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  // systemd-analyze rates a unit's exposure from 0 (locked down) to 10 (exposed); 4.0 or better is the bar
  it.skipIf(!analyze).each(UNITS)(
    "%s.service: systemd-analyze security --offline rates it 4.0 or better",
    async (name) => {
      const r = await run("systemd-analyze", [
        "security",
        "--offline=yes",
        "--no-pager",
        projectPath(`ops/systemd/${name}.service`),
      ]);
      const m = /Overall exposure level for [^:]+: (\d+\.\d+)/.exec(r.stdout);
      expect(m, r.stdout + r.stderr).not.toBeNull();
      expect(Number(m![1]), r.stdout).toBeLessThanOrEqual(4.0);
    },
  );
});

describe("enable_autostart.sh (stub systemctl)", () => {
  const script = projectPath("ops/enable_autostart.sh");

  it("enables what is not enabled, reports the rest, and a second run changes nothing", async () => {
    const s = stub();
    installProjectUnits(s.unitDir);
    installUnit(s.unitDir, "redis-server");
    installUnit(s.unitDir, "postgresql");
    writeFileSync(join(s.dir, "enabled"), "redis-server.service\npostgresql.service\n");

    const first = await run(script, [], s.env);
    expect(first.code).toBe(0);
    const enables = s.calls().filter((c) => c.startsWith("enable "));
    expect(enables).toEqual(UNITS.map((u) => `enable ${u}.service`));
    expect(first.stdout).toContain("already enabled (2):\n  redis-server.service\n  postgresql.service\n");
    expect(first.stdout).toContain(`newly enabled (5):\n${UNITS.map((u) => `  ${u}.service\n`).join("")}`);
    expect(first.stdout).toContain("failed (0):\n  (none)\n");
    expect(first.stdout).toContain("not installed (0):\n  (none)\n");

    const second = await run(script, [], s.env);
    expect(second.code).toBe(0);
    expect(s.calls().filter((c) => c.startsWith("enable "))).toHaveLength(5);
    expect(second.stdout).toContain("already enabled (7):");
    expect(second.stdout).toContain("newly enabled (0):");
  });

  it("reports a failed enable with its error and a unit without WantedBy, exits 1, and never edits a unit", async () => {
    const s = stub();
    installProjectUnits(s.unitDir);
    installUnit(s.unitDir, "redis-server");
    installUnit(s.unitDir, "postgresql", "[Install]\nWantedBy=graphical.target\n");
    writeFileSync(join(s.dir, "fail"), "cea-backend.service\n");
    const hash = (f: string) =>
      createHash("sha256")
        .update(readFileSync(join(s.unitDir, f)))
        .digest("hex");
    const before = readdirSync(s.unitDir).map(hash);

    const r = await run(script, [], s.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /failed \(2\):\n {2}postgresql\.service: .* has no WantedBy=multi-user\.target in \[Install\]/,
    );
    expect(r.stdout).toContain("  cea-backend.service: systemctl enable failed: Failed to enable unit: Access denied");
    expect(s.calls()).not.toContain("enable postgresql.service");
    expect(readdirSync(s.unitDir).map(hash)).toEqual(before);
  });

  it("--dry-run enables nothing", async () => {
    const s = stub();
    installProjectUnits(s.unitDir);
    const r = await run(script, ["--dry-run"], s.env);
    expect(r.code).toBe(0);
    expect(s.calls().filter((c) => !c.startsWith("is-enabled "))).toEqual([]);
    expect(r.stdout).toContain("would be enabled (5):");
    expect(r.stdout).toContain("not installed (2):\n  redis-server.service\n  postgresql.service\n");
  });

  it("--install-units copies the project's units and reloads systemd before enabling", async () => {
    const s = stub();
    const r = await run(script, ["--install-units"], { ...s.env, CEA_UNIT_INSTALL_DIR: s.unitDir });
    expect(r.code).toBe(0);
    expect(readdirSync(s.unitDir).sort()).toEqual(UNITS.map((u) => `${u}.service`).sort());
    expect(s.calls().filter((c) => c !== "--version")[0]).toBe("daemon-reload");
    expect(r.stdout).toContain("newly enabled (5):");
    // systemd 252 has no RestartSteps: no drop-in, and it says so
    expect(r.stdout).toContain("systemd 252 is older than 254: no restart backoff drop-in");
  });

  it("--install-units on systemd 254 or newer adds the restart backoff to the node services", async () => {
    const s = stub();
    const r = await run(script, ["--install-units"], {
      ...s.env,
      CEA_UNIT_INSTALL_DIR: s.unitDir,
      STUB_SYSTEMD_VERSION: "257",
    });
    expect(r.code).toBe(0);
    for (const u of ["can-scanner", "can-worker", "cea-backend", "automation-service"]) {
      const dropin = readFileSync(join(s.unitDir, `${u}.service.d`, "10-restart-backoff.conf"), "utf8");
      const svc = parseUnit(dropin).get("Service")!;
      expect(Number(svc.get("RestartSteps")?.[0])).toBeGreaterThan(0);
      expect(Number(svc.get("RestartMaxDelaySec")?.[0])).toBeGreaterThan(5);
    }
    expect(existsSync(join(s.unitDir, "can-setup.service.d"))).toBe(false);
    expect(s.calls().filter((c) => c !== "--version")[0]).toBe("daemon-reload");
  });

  it("rejects an unknown argument with exit 2", async () => {
    const r = await run(script, ["--bogus"], stub().env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown argument: --bogus");
  });
});

describe("start_all_services.sh (stub systemctl)", () => {
  const script = projectPath("ops/start_all_services.sh");
  let db: TestDatabase;
  let empty: TestDatabase;
  beforeAll(async () => {
    if (!existsSync(projectPath("dist/pipeline/cli.js")))
      throw new Error("build first (npx tsc -p .): dist/pipeline/cli.js is missing");
    db = await createTestDatabase();
    empty = await createTestDatabase({ empty: true });
  });
  afterAll(async () => {
    await db?.drop();
    await empty?.drop();
  });
  const envFor = (url: string, extra: Record<string, string> = {}) => ({
    CEA_ENV_FILE: "/nonexistent/cea.env",
    CEA_APP_DIR: projectRoot(),
    CEA_DATABASE_URL: url,
    ...extra,
  });

  it("verifies the schema, then starts the services in order and summarises", async () => {
    const s = stub();
    const r = await run(script, ["--no-health"], { ...s.env, ...envFor(db.url) });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("schema OK");
    expect(s.calls().filter((c) => c.startsWith("start "))).toEqual(UNITS.map((u) => `start ${u}.service`));
    for (const u of UNITS) expect(r.stdout).toMatch(new RegExp(`^${u}\\s+started \\(active\\)$`, "m"));
    expect(r.stdout).toContain("all services started and healthy");
  });

  it("refuses to start anything when the schema check fails, and says why", async () => {
    const s = stub();
    const r = await run(script, ["--no-health"], { ...s.env, ...envFor(empty.url) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("REFUSING TO START any service: the schema check failed");
    expect(r.stdout).toMatch(/missing/i);
    expect(s.calls()).toEqual([]);
  });

  it("reports a service that fails to start and an API that does not answer its health check", async () => {
    const s = stub();
    writeFileSync(join(s.dir, "fail"), "can-setup.service\n");
    const srv = createServer();
    await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((res) => srv.close(() => res()));
    const r = await run(script, [], {
      ...s.env,
      ...envFor(db.url, { CEA_HTTP_PORT: String(port), CEA_HEALTH_WAIT_S: "1" }),
    });
    expect(r.code).toBe(1);
    // the other services are still started after can-setup failed
    expect(s.calls().filter((c) => c.startsWith("start "))).toHaveLength(5);
    expect(r.stdout).toMatch(/^can-setup\s+FAILED: Job for can-setup\.service failed\.$/m);
    expect(r.stdout).toMatch(
      new RegExp(`^cea-backend\\s+FAILED: GET http://127\\.0\\.0\\.1:${port}/api/v1/health: ECONNREFUSED$`, "m"),
    );
  });

  it("says so when systemd is not available", async () => {
    const r = await run(script, ["--no-health"], { ...envFor(db.url), SYSTEMCTL: "/nonexistent/systemctl" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("systemd is not available: '/nonexistent/systemctl' not found");
  });
});
