import type { StageOptions, StageSpec } from "../pipeline/runtime/stage.js";
import { ackStage } from "./ack.js";
import { batchCopyStage } from "./batch-copy.js";
import { decodeStage } from "./decode.js";
import { resolveSensorStage } from "./resolve-sensor.js";

/**
 * The can-worker's chain, in order. A new stage is one more entry here (and its
 * module in stages/); the runtime does not change. Kept apart from the entry
 * point so that tests can use the very same list without starting a worker.
 */
export const WORKER_STAGES = [
  decodeStage,
  resolveSensorStage,
  batchCopyStage,
  ackStage,
] as unknown as StageSpec<StageOptions>[];
