import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configSchema, loadConfig } from "../../pipeline/runtime/config.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";

describe("configuration", () => {
  const example = readFileSync(projectPath("ops/cea.env.example"), "utf8");

  it("ops/cea.env.example documents every setting, and the defaults it shows are the real ones", () => {
    const documented = new Set([...example.matchAll(/^#? ?(CEA_[A-Z0-9_]+)=/gm)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(configSchema.shape).sort());
    const env = Object.fromEntries(
      [...example.matchAll(/^(CEA_[A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]),
    ) as NodeJS.ProcessEnv;
    // the token has no default; give both sides the same one
    const token = { CEA_API_TOKEN: "x".repeat(16) };
    expect(loadConfig({ ...env, ...token })).toEqual(loadConfig(token));
  });

  it("stops on an invalid variable, naming it", () => {
    expect(() => loadConfig({ CEA_BATCH_SIZE: "many" })).toThrow(ConfigError);
    expect(() => loadConfig({ CEA_BATCH_SIZE: "many", CEA_HTTP_PORT: "-1" })).toThrow(
      /CEA_BATCH_SIZE: .*\n.*CEA_HTTP_PORT: /,
    );
    expect(() => loadConfig({ CEA_API_TOKEN: "short" })).toThrow(/CEA_API_TOKEN: must be at least 16 characters/);
  });
});
