import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../../pipeline/runtime/paths.js";

// Debian's prometheus and promtool, as ops/stack.sh up --test-tools leaves them
// ($CEA_STATE_DIR/tools/bin), or on PATH. A machine without them cannot run the
// Prometheus tests: they say so, and under CI (CI=true) that is a failure.

export interface PrometheusTools {
  prometheus: string;
  promtool: string;
}

function onPath(name: string): string | null {
  try {
    return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

export function findPrometheus(): PrometheusTools | { missing: string } {
  const dir = join(process.env.CEA_STATE_DIR ?? join(projectRoot(), ".state"), "tools", "bin");
  const local = { prometheus: join(dir, "prometheus"), promtool: join(dir, "promtool") };
  if (existsSync(local.prometheus) && existsSync(local.promtool)) return local;
  const prometheus = onPath("prometheus");
  const promtool = onPath("promtool");
  if (prometheus && promtool) return { prometheus, promtool };
  return {
    missing: `no prometheus/promtool in ${dir} or on PATH: run \`bash ops/stack.sh up --test-tools\` (fetches Debian's prometheus package)`,
  };
}
