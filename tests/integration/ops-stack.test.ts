import { execFile, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { projectPath } from "../../pipeline/runtime/paths.js";

// ops/stack.sh as a developer runs it, on a stack of this file's own (its own
// CEA_STATE_DIR, so its own cluster and Redis on their own ports). Two test
// doubles make the races real: a pg_ctl and a redis-server that, on their
// first start, let another process take the port just chosen (as another
// checkout's stack starting at the same moment would) and then run the real
// program.

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const STACK = projectPath("ops/stack.sh");

/** The environment without any CEA_* the developer may have set, plus `env`. */
function cleanEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CEA_")) base[k] = v;
  return { ...base, ...env };
}

function stack(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile("bash", [STACK, ...args], { env: cleanEnv(env), timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const readEnv = (file: string) =>
  Object.fromEntries(
    readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );

const portOf = (url: string) => Number(new URL(url).port);

async function pgPort(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await c.connect();
  try {
    return Number((await c.query<{ port: string }>("SHOW port")).rows[0]!.port);
  } finally {
    await c.end();
  }
}

async function reachable(port: number): Promise<boolean> {
  const c = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "postgres" });
  c.on("error", () => undefined);
  try {
    await c.connect();
    await c.end();
    return true;
  } catch {
    return false;
  }
}

async function redisDir(url: string): Promise<string | undefined> {
  const r = new Redis(url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  r.on("error", () => undefined);
  try {
    await r.connect();
    const reply = (await r.config("GET", "dir")) as string[];
    return reply[1];
  } catch {
    return undefined;
  } finally {
    r.disconnect();
  }
}

/** A port from `from` up that nothing answers on. */
function freeFrom(from: number): number {
  for (let p = from; ; p++) {
    const r = spawnSync("bash", ["-c", `(exec 3<>/dev/tcp/127.0.0.1/${p}) 2>/dev/null`]);
    if (r.status !== 0) return p;
  }
}

describe("ops/stack.sh: usage", () => {
  it("--help prints the usage and exits 0, without touching anything", async () => {
    const state = mkdtempSync(join(tmpdir(), "cea-stack-help-"));
    try {
      for (const args of [["--help"], ["-h"], ["up", "--help"]]) {
        const r = await stack(args, { CEA_STATE_DIR: state });
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(/^usage: ops\/stack\.sh/);
        expect(r.stdout).toContain("CEA_PG_BINDIR");
      }
      expect(readdirSync(state)).toEqual([]);
      const bad = await stack(["bogus"], { CEA_STATE_DIR: state });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("unknown command: bogus");
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});

describe("ops/stack.sh: the private apt source comes from the machine's own apt sources", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  /** An apt configuration folder with the given files. */
  const aptEtc = (files: Record<string, string>) => {
    const etc = mkdtempSync(join(tmpdir(), "cea-apt-"));
    dirs.push(etc);
    mkdirSync(join(etc, "sources.list.d"));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(etc, name), text);
    return etc;
  };
  const source = (etc: string, extra: Record<string, string> = {}) =>
    stack(["apt-source"], { CEA_APT_ETC: etc, CEA_STATE_DIR: etc, ...extra });

  it("deb822: the Debian archive's URI and key, not the security archive's", async () => {
    const etc = aptEtc({
      "sources.list.d/debian.sources": [
        "Types: deb",
        "URIs: http://proxy.example:3142/debian-security",
        "Suites: bookworm-security",
        "Components: main",
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
        "",
        "# the main archive",
        "Types: deb",
        "URIs: http://mirror.example.net/debian/",
        "Suites: bookworm bookworm-updates",
        "Components: main contrib",
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
        "",
      ].join("\n"),
    });
    const r = await source(etc);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        "Types: deb-src",
        "URIs: http://mirror.example.net/debian/",
        "Suites: trixie",
        "Components: main",
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
        "",
      ].join("\n"),
    );
  });

  it("deb822: a disabled stanza is passed over; an embedded key is carried over verbatim", async () => {
    const etc = aptEtc({
      "sources.list.d/a.sources": "Enabled: no\nTypes: deb\nURIs: http://old.example/debian\nSuites: bookworm\n",
      "sources.list.d/b.sources": [
        "Types: deb deb-src",
        "URIs: mirror+file:///etc/apt/mirrors/debian.list",
        "Suites: bookworm",
        "Components: main",
        "Signed-By:",
        " -----BEGIN PGP PUBLIC KEY BLOCK-----",
        " .",
        " mQINBF",
        " -----END PGP PUBLIC KEY BLOCK-----",
        "",
      ].join("\n"),
    });
    const r = await source(etc);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("URIs: mirror+file:///etc/apt/mirrors/debian.list\nSuites: trixie\n");
    expect(r.stdout).toContain(
      "Signed-By: \n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n",
    );
  });

  it("one-line format: options are read, a local mirror or proxy is kept as it is", async () => {
    const etc = aptEtc({
      "sources.list": [
        "# comment",
        "deb http://security.example/debian-security bookworm-security main",
        "deb [ arch=amd64 signed-by=/etc/apt/keyrings/local.gpg ] http://10.1.2.3:3142/debian bookworm main",
        "",
      ].join("\n"),
      "sources.list.d/other.list": "deb https://packages.example.com/apt stable main\n",
    });
    const r = await source(etc);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        "Types: deb-src",
        "URIs: http://10.1.2.3:3142/debian",
        "Suites: trixie",
        "Components: main",
        "Signed-By: /etc/apt/keyrings/local.gpg",
        "",
      ].join("\n"),
    );
  });

  it("no Debian archive configured: a clear error; CEA_APT_MIRROR names one", async () => {
    const etc = aptEtc({ "sources.list.d/other.list": "deb https://packages.example.com/apt stable main\n" });
    const r = await source(etc);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no Debian archive in this machine's apt sources; set CEA_APT_MIRROR");
    const set = await source(etc, { CEA_APT_MIRROR: "http://mirror.example.org/debian" });
    expect(set.code).toBe(0);
    expect(set.stdout).toContain("URIs: http://mirror.example.org/debian\n");
  });

  it("the script names no mirror host of its own", () => {
    const text = readFileSync(STACK, "utf8");
    expect(text.match(/\b(?:https?|ftp):\/\/[^\s"'$]+/g) ?? []).toEqual([]);
  });
});

describe("ops/stack.sh: ports, races and binaries of a stack of its own", () => {
  const root = mkdtempSync(join(tmpdir(), "cea-stack-"));
  chmodSync(root, 0o755); // the cluster's user (postgres, when we are root) runs the pg_ctl double from here
  const state = join(root, "state");
  const farm = join(root, "bin"); // the real PostgreSQL binaries, pg_ctl wrapped
  const other = join(root, "other-bin"); // "other" binaries: a copy of postgres is another file
  const wrap = join(root, "path"); // redis-server wrapped, first on PATH
  const marks = join(root, "marks");
  const realBindir = inject("pgBindir");
  let started = false;

  /** A script that, the first time it runs, lets a listener take port $port, then runs the real program. */
  const takeOnce = (name: string, portFrom: string, real: string) => `#!/bin/bash
if [[ ! -e "${marks}/${name}" ]]; then
  ${portFrom}
  if [[ -n "$port" ]]; then
    echo "$port" > "${marks}/${name}"
    "${process.execPath}" -e 'require("net").createServer().listen(Number(process.argv[1]), "127.0.0.1"); setTimeout(() => process.exit(0), 120000)' "$port" </dev/null >/dev/null 2>&1 &
    echo $! > "${marks}/${name}.pid"
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  fi
fi
exec "${real}" "$@"
`;

  beforeAll(() => {
    mkdirSync(farm);
    mkdirSync(other);
    mkdirSync(wrap);
    mkdirSync(marks);
    chmodSync(marks, 0o777);
    for (const f of readdirSync(realBindir)) {
      if (f !== "pg_ctl") symlinkSync(join(realBindir, f), join(farm, f));
      if (f === "postgres") copyFileSync(join(realBindir, f), join(other, f));
      else symlinkSync(join(realBindir, f), join(other, f));
    }
    chmodSync(join(other, "postgres"), 0o755);
    writeFileSync(
      join(farm, "pg_ctl"),
      takeOnce(
        "pg",
        `data=""; for ((i = 1; i <= $#; i++)); do [[ "\${!i}" == -D ]] && { j=$((i + 1)); data=\${!j}; }; done
  port=""; [[ " $* " == *" start "* ]] && port=$(sed -n 's/^port = \\([0-9]*\\)$/\\1/p' "$data/postgresql.conf" | tail -n1)`,
        join(realBindir, "pg_ctl"),
      ),
    );
    chmodSync(join(farm, "pg_ctl"), 0o755);
    const realRedis = spawnSync("bash", ["-c", "command -v redis-server"], { encoding: "utf8" }).stdout.trim();
    writeFileSync(
      join(wrap, "redis-server"),
      takeOnce(
        "redis",
        `port=""; for ((i = 1; i <= $#; i++)); do [[ "\${!i}" == --port ]] && { j=$((i + 1)); port=\${!j}; }; done`,
        realRedis,
      ),
    );
    chmodSync(join(wrap, "redis-server"), 0o755);
  });

  afterAll(async () => {
    if (started) await stack(["destroy"], { CEA_STATE_DIR: state });
    for (const name of ["pg", "redis"]) {
      const f = join(marks, `${name}.pid`);
      if (existsSync(f)) {
        try {
          process.kill(Number(readFileSync(f, "utf8")), "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
    rmSync(root, { recursive: true, force: true });
  });

  const base = { CEA_STATE_DIR: state };
  const stackEnv = () => readEnv(join(state, "stack.env"));

  it("a port taken while the stack starts: PostgreSQL and Redis move on to the next port", async () => {
    // below the kernel's ephemeral range (32768 up): there any outgoing connection of a test running beside
    // this one may take the port between the check and the start, which the "moves" below must not meet
    const pgFrom = freeFrom(22_000 + Math.floor(Math.random() * 3_000));
    const redisFrom = freeFrom(pgFrom + 3_000);
    started = true;
    const r = await stack(["up"], {
      ...base,
      CEA_PG_BINDIR: farm,
      CEA_STACK_PG_PORT_FROM: String(pgFrom),
      CEA_STACK_REDIS_PORT_FROM: String(redisFrom),
      PATH: `${wrap}:${process.env.PATH}`,
    });
    expect(r.code, r.stderr).toBe(0);
    const takenPg = Number(readFileSync(join(marks, "pg"), "utf8"));
    const takenRedis = Number(readFileSync(join(marks, "redis"), "utf8"));
    expect(r.stderr).toContain(`port ${takenPg} was taken while PostgreSQL started`);
    expect(r.stderr).toContain(`port ${takenRedis} was taken while Redis started`);
    const env = stackEnv();
    expect(portOf(env.CEA_DATABASE_URL!)).toBeGreaterThan(takenPg);
    expect(await pgPort(env.CEA_DATABASE_URL!)).toBe(portOf(env.CEA_DATABASE_URL!));
    expect(portOf(env.CEA_REDIS_URL!)).toBeGreaterThan(takenRedis);
    expect(await redisDir(env.CEA_REDIS_URL!)).toBe(join(state, "redis"));
    expect(env.CEA_PG_BINDIR).toBe(farm);
  }, 180_000);

  it("a second up keeps the stack as it is, and the binaries the cluster was made with", async () => {
    const before = stackEnv();
    const r = await stack(["up"], base); // no CEA_PG_BINDIR
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain("starting");
    expect(stackEnv()).toEqual(before);
  });

  it("CEA_PG_BINDIR naming other binaries than the cluster's is refused with the reason; nothing changes", async () => {
    const before = stackEnv();
    const r = await stack(["up"], { ...base, CEA_PG_BINDIR: other });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`CEA_PG_BINDIR=${other}`);
    expect(r.stderr).toContain("A cluster cannot change binaries");
    expect(r.stderr).toContain("CEA_STATE_DIR=");
    expect(stackEnv()).toEqual(before);
    expect(await pgPort(before.CEA_DATABASE_URL!)).toBe(portOf(before.CEA_DATABASE_URL!));
  });

  it("CEA_STACK_PG_PORT / CEA_STACK_REDIS_PORT move an existing stack; later runs keep the new ports", async () => {
    const before = stackEnv();
    const pgTo = freeFrom(portOf(before.CEA_DATABASE_URL!) + 17);
    const redisTo = freeFrom(portOf(before.CEA_REDIS_URL!) + 17);
    const r = await stack(["up"], {
      ...base,
      CEA_STACK_PG_PORT: String(pgTo),
      CEA_STACK_REDIS_PORT: String(redisTo),
    });
    expect(r.code, r.stderr).toBe(0);
    const env = stackEnv();
    expect(portOf(env.CEA_DATABASE_URL!)).toBe(pgTo);
    expect(await pgPort(env.CEA_DATABASE_URL!)).toBe(pgTo);
    expect(await reachable(portOf(before.CEA_DATABASE_URL!))).toBe(false);
    expect(portOf(env.CEA_REDIS_URL!)).toBe(redisTo);
    expect(await redisDir(env.CEA_REDIS_URL!)).toBe(join(state, "redis"));
    expect(await redisDir(before.CEA_REDIS_URL!)).toBeUndefined();

    const again = await stack(["up"], base);
    expect(again.code, again.stderr).toBe(0);
    expect(stackEnv()).toEqual(env);
  });

  it("a port the caller chose that another process holds is refused, naming the variable", async () => {
    const env = stackEnv();
    // the stack's own Redis holds this port: asking PostgreSQL to move there must fail
    const r = await stack(["up"], { ...base, CEA_STACK_PG_PORT: String(portOf(env.CEA_REDIS_URL!)) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`port ${portOf(env.CEA_REDIS_URL!)} (CEA_STACK_PG_PORT) is taken by another process`);
    expect(await pgPort(env.CEA_DATABASE_URL!)).toBe(portOf(env.CEA_DATABASE_URL!));
  });

  it("destroy stops both and deletes their data", async () => {
    const env = stackEnv();
    const r = await stack(["destroy"], base);
    expect(r.code, r.stderr).toBe(0);
    started = false;
    expect(await reachable(portOf(env.CEA_DATABASE_URL!))).toBe(false);
    expect(await redisDir(env.CEA_REDIS_URL!)).toBeUndefined();
    expect(existsSync(join(state, "stack.env"))).toBe(false);
    expect(existsSync(join(state, "redis"))).toBe(false);
  });
});
