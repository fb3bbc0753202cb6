#!/usr/bin/env node
import { parseArgs } from "node:util";
import { runMain } from "../pipeline/runtime/shutdown.js";
import { withStackEnv } from "../pipeline/runtime/stack-env.js";
import { type Bench, formatTable, writeResults } from "./lib.js";

// npm run bench [-- --scale 0.1] [name ...]: runs each benchmark module
// bench/<name>.ts (default export: Bench) in turn, prints its table and writes
// bench/results/<name>.json.
const ALL = ["schema", "pipeline", "decode", "api", "migration", "aggregates", "automation"];

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { scale: { type: "string", default: "1" } },
  });
  const env = withStackEnv();
  if (!env.CEA_DATABASE_URL || !env.CEA_REDIS_URL) throw new Error("no stack: run ops/stack.sh up first");
  const scale = Number(values.scale);
  if (!(scale > 0)) throw new Error(`--scale must be a positive number, got ${values.scale}`);
  const names = positionals.length ? positionals : ALL;
  for (const name of names) {
    if (!ALL.includes(name)) throw new Error(`unknown benchmark ${name}; known: ${ALL.join(", ")}`);
    const mod = (await import(`./${name}.js`)) as { default: Bench };
    const started = Date.now();
    const { rows, params } = await mod.default({
      databaseUrl: env.CEA_DATABASE_URL,
      redisUrl: env.CEA_REDIS_URL,
      pgBindir: env.CEA_PG_BINDIR ?? "/usr/lib/postgresql/15/bin",
      scale,
      log: (m) => process.stderr.write(`[${name}] ${m}\n`),
    });
    process.stdout.write(`${formatTable(`${name} (${JSON.stringify(params)})`, rows)}\n`);
    const file = await writeResults(name, { params, rows, seconds: (Date.now() - started) / 1000 });
    process.stdout.write(`  results: ${file}\n`);
  }
}

runMain(main);
