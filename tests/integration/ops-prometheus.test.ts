import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { findPrometheus } from "../support/prometheus.js";

// ops/prometheus/ checked by Debian's promtool: the scrape configuration, the
// alert rules, and the rules' unit tests (cea-alerts.test.yml feeds series and
// says which alerts fire when).

const run = promisify(execFile);
const tools = findPrometheus();
const missing = "missing" in tools ? tools.missing : null;
if (missing) {
  if (process.env.CI === "true") throw new Error(`the Prometheus tests cannot run: ${missing}`);
  process.stdout.write(`\n[cea] ops-prometheus tests DO NOT RUN: ${missing}\n\n`);
}

describe.skipIf(missing !== null)("ops/prometheus with promtool", () => {
  const promtool = "promtool" in tools ? tools.promtool : "";

  it("the scrape configuration is valid and loads the rules", async () => {
    const { stdout } = await run(promtool, ["check", "config", projectPath("ops/prometheus/prometheus.yml")]);
    expect(stdout).toMatch(/SUCCESS: 1 rule files found/);
    expect(stdout).toMatch(/is valid prometheus config file syntax/);
  });

  it("the alert rules are valid", async () => {
    const { stdout } = await run(promtool, ["check", "rules", projectPath("ops/prometheus/cea-alerts.yml")]);
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it("every alert rule has a unit test, and they pass", async () => {
    const { stdout, stderr } = await run(promtool, [
      "test",
      "rules",
      projectPath("ops/prometheus/cea-alerts.test.yml"),
    ]);
    expect(`${stdout}${stderr}`).toMatch(/SUCCESS/);
    const rules = readFileSync(projectPath("ops/prometheus/cea-alerts.yml"), "utf8");
    const tests = readFileSync(projectPath("ops/prometheus/cea-alerts.test.yml"), "utf8");
    const alerts = [...rules.matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1]!);
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    const tested = new Set([...tests.matchAll(/alertname: (\w+)$/gm)].map((m) => m[1]!));
    expect(alerts.filter((a) => !tested.has(a))).toEqual([]);
  });

  it("a broken rule is caught (the check can fail)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cea-rules-"));
    const bad = join(dir, "bad.yml");
    writeFileSync(bad, "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(cea_x[5m]\n");
    await expect(run(promtool, ["check", "rules", bad])).rejects.toThrow(/parse error|unclosed/i);
  });
});
