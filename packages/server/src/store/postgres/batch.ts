/**
 * Group commit for the runtime operations on PostgreSQL. Operations that arrive while earlier
 * groups are running wait for a free slot and then run together in one transaction: their
 * reservations are locked in one statement (by id), their budgets in one statement (scope, unit),
 * everything they read in that same statement, all of their writes in one statement, and one
 * COMMIT. The statements per operation shrink with the size of the group, which is what bounds
 * a busy server (and the time a hot tenant's root row stays locked per operation).
 *
 * Inside the group the operations run one after the other against one SnapshotView, each from a
 * checkpoint: one that is refused leaves no trace, and later ones see what earlier ones wrote
 * (two requests with one idempotency key in one group: the second replays the first). The group
 * is an ordinary transaction for every other process: the same lock order, the same retries.
 */
import type { OpResult } from '../../ledger/ops/shared.js';

export interface BatchItem {
  /** Budgets (and tenant, policies) this operation evaluates; for settle items, known after its reservation is read. */
  tenantId?: string | undefined;
  scopes?: readonly string[] | undefined;
  /** The reservation a commit, release or extend acts on (locked first). */
  reservationId?: string | undefined;
  /** Whether the budgets must be locked (false only for decide and dry runs). */
  lock: boolean;
  /** The idempotency record read with the evaluation. */
  endpoint: string;
  key: string | undefined;
  run: (view: import('./view.js').SnapshotView) => OpResult;
  /** The same operation in a transaction of its own (when its group failed for a reason of one member). */
  single: () => Promise<OpResult>;
}

interface Queued {
  item: BatchItem;
  resolve: (r: OpResult) => void;
  reject: (e: unknown) => void;
}

/** Operations in one group at most. */
export const MAX_GROUP = 64;

interface Lane {
  queue: Queued[];
  running: number;
}

/**
 * Collects operations and hands them to `runGroup` in groups. Operations go to a lane by their
 * tenant (`laneKey`), and each lane runs at most `perLane` groups at a time: while a lane's
 * groups are in flight its new arrivals wait and form one bigger group, instead of many small
 * ones that queue on the same tenant's rows in the database anyway. The fixed costs of a group
 * (its statements, its network writes) are then shared by more operations. Different lanes (most
 * often different tenants) run side by side on different connections.
 * `runGroup` settles every item of its group (resolve or reject).
 */
export class Batcher {
  private readonly lanes: Lane[];
  private scheduled = false;

  constructor(
    lanes: number,
    private readonly perLane: number,
    private readonly runGroup: (group: Queued[]) => Promise<void>,
  ) {
    this.lanes = Array.from({ length: Math.max(1, lanes) }, () => ({ queue: [], running: 0 }));
  }

  submit(laneKey: string, item: BatchItem): Promise<OpResult> {
    return new Promise<OpResult>((resolve, reject) => {
      this.lanes[laneOf(laneKey, this.lanes.length)]!.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Starts groups on the next turn of the event loop, so that one turn's arrivals share a group. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      for (const lane of this.lanes) {
        while (lane.running < this.perLane && lane.queue.length > 0) {
          const group = lane.queue.splice(0, MAX_GROUP);
          lane.running++;
          this.runGroup(group)
            .catch((e: unknown) => {
              for (const q of group) q.reject(e);
            })
            .finally(() => {
              lane.running--;
              if (lane.queue.length > 0) this.schedule();
            });
        }
      }
    });
  }
}

/** A stable lane per key (FNV-1a). */
function laneOf(key: string, lanes: number): number {
  if (lanes === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % lanes;
}

export type { Queued };
