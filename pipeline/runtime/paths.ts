import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/** The package root (where package.json is), from source or from dist/. */
export function projectRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`package.json not found above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  root = dir;
  return dir;
}

/** A path from config: absolute as given, otherwise relative to the package root. */
export function projectPath(p: string): string {
  return isAbsolute(p) ? p : resolve(projectRoot(), p);
}
