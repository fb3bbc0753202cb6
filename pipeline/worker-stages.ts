import { ackStage } from "../stages/ack.js";
import { batchCopyStage } from "../stages/batch-copy.js";
import { decodeStage } from "../stages/decode.js";
import { resolveSensorStage } from "../stages/resolve-sensor.js";
import type { StageOptions, StageSpec } from "./stage.js";

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
