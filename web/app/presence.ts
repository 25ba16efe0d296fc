// Who else is in the open chat right now: how far each member has read
// ("Seen by" under one's own last message) and who is typing. Both come
// from the chat's stream; the markers start from the chat's members as
// GetChat gives them.
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { type Member } from "../../gen/ts/chat/v1/chat_pb";

/** Typing shows at most this long past what the server said, as a margin
 * for a late "stopped". */
const TYPING_GRACE_MS = 500;

export class Presence {
  /** Each member's read marker. */
  private readonly markers = new Map<bigint, bigint>();
  private readonly names = new Map<bigint, string>();
  /** Who is typing, until when (ms since the epoch). */
  private readonly typing = new Map<bigint, number>();
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  /** When each member joined (ms since the epoch): one who joined after a
   * message starts with it read, without having seen it. */
  private readonly joined = new Map<bigint, number>();
  /** The newest message the caller sent, as far as this chat shows, and
   * when it was sent. */
  private ownNewest = 0n;
  private ownNewestAt = 0;

  /** Whether the members were given yet, and who was heard of without
   * being among them (asked about once each). */
  private known = false;
  private readonly strangers = new Set<bigint>();

  constructor(
    private readonly me: bigint,
    private readonly seenLine: HTMLElement,
    private readonly typingLine: HTMLElement,
    /** Someone not among the members as last given marked or typed: they
     * joined since, and the members should be read again. */
    private readonly joinedSince: () => void,
  ) {}

  /** The chat's members, with their markers as GetChat reads them. */
  members(members: Member[]) {
    this.known = true;
    for (const member of members) {
      this.names.set(member.userId, member.username || `user ${member.userId}`);
      this.joined.set(member.userId, member.joinedAt ? timestampMs(member.joinedAt) : 0);
      this.moved(member.userId, member.readMessageId);
    }
    this.render();
  }

  /** A message shown: it moves its sender's marker and ends their typing. */
  message(fromUserId: bigint, id: bigint, createdAt: Timestamp | undefined) {
    if (fromUserId === this.me && id > this.ownNewest) {
      this.ownNewest = id;
      this.ownNewestAt = createdAt ? timestampMs(createdAt) : Date.now();
    }
    // A message's sender may have left since: only the stream's markers
    // and typing, which come from members, make the members read again.
    this.moved(fromUserId, id);
    this.typing.delete(fromUserId);
    this.render();
  }

  /** A member's marker moved, as the stream says. */
  marker(userId: bigint, messageId: bigint) {
    this.heardOf(userId);
    this.moved(userId, messageId);
    this.render();
  }

  /** Markers never move back. */
  private moved(userId: bigint, messageId: bigint) {
    if (messageId > (this.markers.get(userId) ?? 0n)) {
      this.markers.set(userId, messageId);
    }
  }

  /** The members could not be read again: whoever was asked about may be
   * asked about again. */
  membersUnread() {
    this.strangers.clear();
  }

  /** A member typing for `forMs` (0: stopped). */
  typed(userId: bigint, forMs: number) {
    if (userId === this.me) {
      return;
    }
    this.heardOf(userId);
    if (forMs === 0) {
      this.typing.delete(userId);
    } else {
      this.typing.set(userId, Date.now() + forMs + TYPING_GRACE_MS);
    }
    this.render();
  }

  private heardOf(userId: bigint) {
    if (this.known && !this.names.has(userId) && !this.strangers.has(userId)) {
      this.strangers.add(userId);
      this.joinedSince();
    }
  }

  close() {
    clearTimeout(this.typingTimer);
  }

  private render() {
    const seen = [...this.markers]
      .filter(
        ([userId, read]) =>
          userId !== this.me &&
          this.ownNewest > 0n &&
          read >= this.ownNewest &&
          (this.joined.get(userId) ?? 0) <= this.ownNewestAt,
      )
      .map(([userId]) => this.names.get(userId) ?? `user ${userId}`);
    this.seenLine.textContent = seen.length > 0 ? `Seen by ${seen.join(", ")}` : "";

    const now = Date.now();
    for (const [userId, until] of this.typing) {
      if (until <= now) {
        this.typing.delete(userId);
      }
    }
    const typists = [...this.typing.keys()].map((userId) => this.names.get(userId) ?? `user ${userId}`);
    this.typingLine.textContent =
      typists.length === 0
        ? ""
        : `${typists.join(", ")} ${typists.length === 1 ? "is" : "are"} typing…`;
    clearTimeout(this.typingTimer);
    if (this.typing.size > 0) {
      const next = Math.min(...this.typing.values()) - now;
      this.typingTimer = setTimeout(() => this.render(), Math.max(next, 50));
    }
  }
}
