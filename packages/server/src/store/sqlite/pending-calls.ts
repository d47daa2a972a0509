/**
 * The calls awaiting the store thread's reply, by call id (ids count up from 1).
 *
 * Why not a Map: with an insert and a delete per call, its replaced hash tables kept the calls
 * pending at each replacement, and so their requests, alive to young-generation collections
 * (src/linked-list.ts says how). Here a call's slot is emptied when it is settled.
 *
 * Calls sit in a ring indexed by id. A call still pending when its slot comes round again (one
 * that outlasted `capacity` later calls: a long export, say) moves to a Map of stragglers, which
 * sees few inserts and so little of the above.
 */
export class PendingCalls<T extends object> {
  private readonly slots: ({ id: number; value: T } | undefined)[];
  private readonly mask: number;
  private readonly stragglers = new Map<number, T>();
  size = 0;

  constructor(capacity = 1024) {
    if (!Number.isInteger(Math.log2(capacity))) throw new RangeError('capacity must be a power of two');
    this.slots = new Array<{ id: number; value: T } | undefined>(capacity).fill(undefined);
    this.mask = capacity - 1;
  }

  add(id: number, value: T): void {
    const i = id & this.mask;
    const occupant = this.slots[i];
    if (occupant) this.stragglers.set(occupant.id, occupant.value);
    this.slots[i] = { id, value };
    this.size++;
  }

  /** Removes and returns the call with this id, if it is pending. */
  take(id: number): T | undefined {
    const i = id & this.mask;
    const occupant = this.slots[i];
    if (occupant?.id === id) {
      this.slots[i] = undefined;
      this.size--;
      return occupant.value;
    }
    const straggler = this.stragglers.get(id);
    if (straggler === undefined) return undefined;
    this.stragglers.delete(id);
    this.size--;
    return straggler;
  }

  /** Removes and returns every pending call. */
  drain(): T[] {
    const all: T[] = [...this.stragglers.values()];
    this.stragglers.clear();
    for (let i = 0; i < this.slots.length; i++) {
      const occupant = this.slots[i];
      if (occupant) all.push(occupant.value);
      this.slots[i] = undefined;
    }
    this.size = 0;
    return all;
  }
}
