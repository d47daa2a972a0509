/** A node of a LinkedList: the list's links live on the node itself. */
export interface Linked<T> {
  prev: T | null;
  next: T | null;
}

/**
 * A doubly linked list of in-flight work, oldest first, for bookkeeping that a long-lived Map
 * would make expensive: a Map's replaced hash tables, allocated in the old generation once the
 * Map is old, keep pointing at the entries they held, and a young-generation collection treats
 * them as alive, so whatever those entries reach is copied and promoted until the next full
 * collection (docs/benchmarks.md, "What bought it", item 19). A node drops its links when it is
 * removed, so nothing finished points at anything still young.
 */
export class LinkedList<T extends Linked<T>> {
  head: T | null = null;
  private tail: T | null = null;
  size = 0;

  push(node: T): T {
    node.prev = this.tail;
    node.next = null;
    if (this.tail) this.tail.next = node;
    else this.head = node;
    this.tail = node;
    this.size++;
    return node;
  }

  /** Unlinks `node`, which must be in this list. */
  remove(node: T): void {
    if (node.prev) node.prev.next = node.next;
    else this.head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.tail = node.prev;
    node.prev = node.next = null;
    this.size--;
  }
}
