import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../pipeline/runtime/paths.js";

// The layers of the source tree, lowest first. A module may import its own
// layer and the ones below it, never one above: the runtime knows no domain, the
// database layer no pipeline, the CAN layer no stage, and only the entry points
// (pipeline/*.ts) put services together.
const LAYERS: { name: string; owns: (file: string) => boolean }[] = [
  { name: "pipeline/runtime", owns: (f) => f.startsWith("pipeline/runtime/") },
  { name: "db", owns: (f) => f.startsWith("db/") },
  { name: "pipeline/can", owns: (f) => f.startsWith("pipeline/can/") },
  { name: "stages", owns: (f) => f.startsWith("stages/") },
  { name: "pipeline/<service>/", owns: (f) => /^pipeline\/[^/]+\//.test(f) },
  { name: "pipeline/ (entry points)", owns: (f) => /^pipeline\/[^/]+\.ts$/.test(f) },
];

const layerOf = (file: string) => LAYERS.findIndex((l) => l.owns(file));

function sources(dir: string): string[] {
  const root = projectRoot();
  return readdirSync(join(root, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts"))
    .map((e) => relative(root, join(e.parentPath, e.name)));
}

function localImports(file: string): string[] {
  const text = readFileSync(join(projectRoot(), file), "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g))
    out.push(relative(projectRoot(), resolve(dirname(join(projectRoot(), file)), m[1]!)).replace(/\.js$/, ".ts"));
  return out;
}

describe("source layout", () => {
  it("every product module belongs to a layer", () => {
    const files = [...sources("pipeline"), ...sources("stages"), ...sources("db")];
    expect(files.length).toBeGreaterThan(40);
    expect(files.filter((f) => layerOf(f) < 0)).toEqual([]);
  });

  it("no module imports a layer above its own", () => {
    const wrong: string[] = [];
    for (const file of [...sources("pipeline"), ...sources("stages"), ...sources("db")]) {
      const own = layerOf(file);
      for (const dep of localImports(file)) {
        const theirs = layerOf(dep);
        if (theirs > own) wrong.push(`${file} (${LAYERS[own]!.name}) imports ${dep} (${LAYERS[theirs]!.name})`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("the check sees an upward import when there is one", () => {
    // guards the regex and the layer table themselves: stages/chains.ts imports the stages
    expect(localImports("stages/chains.ts")).toContain("stages/decode.ts");
    expect(layerOf("pipeline/can-worker.ts")).toBeGreaterThan(layerOf("stages/chains.ts"));
    expect(layerOf("stages/decode.ts")).toBeGreaterThan(layerOf("pipeline/can/codec.ts"));
  });
});
