import type { z } from "zod";
import type { Health } from "./health.js";
import type { Logger } from "./log.js";
import type { OptionsSchema, StageInstance, StageSpec, StageUse } from "./stage.js";
import type { Component } from "./worker-contract.js";

// Start-up shared by the worker and scanner runtimes: the declared components
// first, in order, then one instance per stage of the chain with the options
// chainOptions validated. Each part is pushed into `started` as soon as it
// exists, so the caller's cleanup of a start-up that fails halfway closes
// exactly what was started.

export interface StartedStage<E> {
  spec: StageSpec<unknown, unknown, OptionsSchema, E>;
  stage: StageInstance<unknown, unknown, E>;
}

export interface Started<E> {
  components: Component[];
  stages: StartedStage<E>[];
}

export async function startParts<E>(
  p: {
    components: readonly Component[] | undefined;
    stages: readonly StageUse<unknown, unknown, E>[];
    options: readonly z.output<OptionsSchema>[];
    log: Logger;
    health: Health;
    signal: AbortSignal;
  },
  started: Started<E>,
): Promise<void> {
  for (const c of p.components ?? []) {
    await c.start({
      log: p.log.child({ component: c.name }),
      problem: (cause) => (cause === null ? p.health.recover(c.name) : p.health.degrade(c.name, cause)),
    });
    started.components.push(c);
  }
  for (const [i, u] of p.stages.entries()) {
    const stage = await u.spec.create(
      { log: p.log.child({ stage: u.spec.name }), stopping: p.signal },
      p.options[i] ?? {},
    );
    started.stages.push({ spec: u.spec, stage });
  }
}
