// The "Sessions" view: where the user is logged in, most recently used
// first, with this browser's session marked; any other one can be ended,
// or all of them at once. An ended session's browser finds itself logged
// out at its next call. Two-factor login is turned on and off here too.
import type { Client } from "@connectrpc/connect";
import type { AuthService, Session as Listed } from "../../gen/ts/auth/v1/auth_pb";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { byId, el } from "./dom";

/** A user agent as people name it ("Firefox on Windows", "chatctl 0.1.0"),
 * or as it came, if it is none of those. */
export function clientName(userAgent: string): string {
  const cli = /^chatctl\/(\S+)/.exec(userAgent);
  if (cli) return `chatctl ${cli[1]}`;
  const browser = /\b(Edg|OPR|Firefox|HeadlessChrome|Chrome|Safari)\/\d+/.exec(userAgent)?.[1];
  const system = /\b(Windows|Android|iPhone|iPad|Mac OS X|CrOS|Linux)\b/.exec(userAgent)?.[1];
  const names: Record<string, string> = { Edg: "Edge", OPR: "Opera", "Mac OS X": "macOS", CrOS: "ChromeOS" };
  if (!browser) return userAgent || "unknown client";
  const named = names[browser] ?? browser;
  return system ? `${named} on ${names[system] ?? system}` : named;
}

export class SessionsView {
  constructor(
    private readonly auth: Client<typeof AuthService>,
    private readonly list: HTMLUListElement,
    private readonly status: HTMLElement,
    private readonly fail: (error: unknown) => void,
  ) {}

  /** Reads the sessions again and shows them. */
  async show(): Promise<void> {
    const { sessions } = await this.auth.listSessions({});
    this.list.replaceChildren(...sessions.map((listed) => this.item(listed)));
    const others = sessions.filter((listed) => !listed.current).length;
    this.status.textContent =
      others === 0 ? "No other sessions." : `${others} other session${others === 1 ? "" : "s"}.`;
  }

  /** A new secret for an authenticator app, shown until confirmed. */
  async enrollTotp(): Promise<void> {
    const { secret, otpauthUri } = await this.auth.enrollTotp({});
    byId("totp-secret").textContent = secret;
    byId<HTMLAnchorElement>("totp-uri").href = otpauthUri;
    byId("totp-confirm-form").hidden = false;
    byId("totp-recovery").hidden = true;
    byId("totp-status").textContent = "";
    byId("totp-code").focus();
  }

  /** Turns two-factor login on; shows the recovery codes, this once. */
  async confirmTotp(code: string, currentPassword: string): Promise<void> {
    const { recoveryCodes } = await this.auth.confirmTotp({ code, currentPassword });
    byId<HTMLFormElement>("totp-confirm-form").reset();
    byId("totp-confirm-form").hidden = true;
    byId("totp-secret").textContent = "";
    byId<HTMLAnchorElement>("totp-uri").href = "#";
    byId("totp-recovery-codes").replaceChildren(...recoveryCodes.map((code) => el("li", "", code)));
    byId("totp-recovery").hidden = false;
    byId("totp-status").textContent = "Two-factor login is on.";
  }

  /** Turns two-factor login off. */
  async disableTotp(password: string, code: string): Promise<void> {
    await this.auth.disableTotp({ password, code });
    byId<HTMLFormElement>("totp-disable-form").reset();
    byId("totp-recovery").hidden = true;
    byId("totp-status").textContent = "Two-factor login is off.";
  }

  /** Clears everything shown, the secret and the recovery codes first. */
  reset(): void {
    this.list.replaceChildren();
    this.status.textContent = "";
    byId("totp-secret").textContent = "";
    byId<HTMLAnchorElement>("totp-uri").href = "#";
    byId("totp-recovery-codes").replaceChildren();
    byId("totp-status").textContent = "";
    byId<HTMLFormElement>("totp-confirm-form").reset();
    byId<HTMLFormElement>("totp-disable-form").reset();
    byId("totp-confirm-form").hidden = true;
    byId("totp-recovery").hidden = true;
  }

  /** Ends every session but this browser's. */
  async endOthers(): Promise<void> {
    const { revoked } = await this.auth.revokeOtherSessions({});
    await this.show();
    this.status.textContent = `Ended ${revoked} other session${revoked === 1 ? "" : "s"}.`;
  }

  private item(listed: Listed): HTMLLIElement {
    const when = (at: Listed["lastUsedAt"]) => (at ? timestampDate(at).toLocaleString() : "unknown");
    const client = clientName(listed.client);
    const name = el("strong", "client", client);
    name.title = listed.client;
    const item = el(
      "li",
      listed.current ? "current" : "",
      name,
      listed.current ? " (this browser)" : "",
      el("span", "where", listed.address || "unknown address"),
      el("span", "when", `last used ${when(listed.lastUsedAt)}, since ${when(listed.startedAt)}`),
    );
    item.dataset.sessionId = listed.id;
    if (!listed.current) {
      const end = el("button", "end", "End");
      end.type = "button";
      end.setAttribute("aria-label", `End the session of ${client}`);
      end.addEventListener("click", () => {
        this.auth
          .revokeSession({ sessionId: listed.id })
          .then(() => this.show())
          .catch(this.fail);
      });
      item.append(end);
    }
    return item;
  }
}
