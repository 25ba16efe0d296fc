// Account recovery: a forgotten password set anew with the token a reset
// mail carried, and an email address shown to be its owner's with the
// token a verification mail carried (or a new mail asked for). The mails
// link back to this page, as `#reset=TOKEN` and `#verify=TOKEN`.
import { Code, createClient, type Client } from "@connectrpc/connect";
import { AuthService } from "../../gen/ts/auth/v1/auth_pb";
import type { UserService } from "../../gen/ts/auth/v1/user_pb";
import { byId } from "./dom";
import { codeOf, describe, retryDelayMs } from "./errors";
import { transport } from "./session";

/** A link from a mail, as the page's hash carries it. */
export interface MailLink {
  kind: "verify" | "reset";
  token: string;
}

/** The link in `hash` (`#verify=TOKEN`, `#reset=TOKEN`), if it is one. */
export function mailLink(hash: string): MailLink | undefined {
  const found = /^#(verify|reset)=([A-Za-z0-9_-]+)$/.exec(hash);
  return found ? { kind: found[1] as MailLink["kind"], token: found[2] } : undefined;
}

/** Drops a followed link from the address bar and the history, so that a
 * reload does not present its token again. */
function forgetLink() {
  history.replaceState(history.state, "", location.pathname + location.search);
}

/** Shows `text` in the status line `id` (hidden while empty); a failure
 * in the error colour. */
function status(id: string, text: string, failed = false) {
  const line = byId(id);
  line.textContent = text;
  line.className = failed ? "failed" : "";
  line.hidden = text === "";
}

/** A failure as one line, with when to try again if the server said. */
function failure(error: unknown): string {
  const asked = retryDelayMs(error);
  const wait = asked === undefined ? "" : ` (try again in ${Math.max(1, Math.ceil(asked / 1000))} s)`;
  return describe(error) + wait;
}

/** The signed-in user's own calls. */
interface Mine {
  userId: bigint;
  auth: Client<typeof AuthService>;
}

export class Recovery {
  /** Without a login: verifying, asking for a reset and resetting take
   * none. */
  private readonly auth: Client<typeof AuthService>;
  private mine: Mine | undefined;
  /** The token of the reset link being followed. */
  private resetToken = "";

  constructor(authUrl: string) {
    this.auth = createClient(AuthService, transport(authUrl));
  }

  /** Logged in: reads the user's account and, if its address is not
   * verified, says so, with a way to have the mail sent again. */
  async signedIn(
    userId: bigint,
    auth: Client<typeof AuthService>,
    users: Client<typeof UserService>,
  ): Promise<void> {
    const mine = { userId, auth };
    this.mine = mine;
    const { user } = await users.get({ id: userId });
    // Logged out (or in as another user) meanwhile: nothing to show.
    if (this.mine === mine && user) {
      byId("verify-notice").hidden = user.emailVerified;
    }
  }

  /** Mails the signed-in user's address a new verification token. */
  async resendVerification(): Promise<void> {
    const mine = this.mine;
    if (!mine) return;
    try {
      const { email } = await mine.auth.resendEmailVerification({});
      status("resend-status", `Verification mail sent to ${email}`);
    } catch (error) {
      status("resend-status", failure(error), true);
    }
  }

  /** Follows a verification link. Whoever is logged in, if anyone, stays
   * logged in. */
  async verify(token: string): Promise<void> {
    status("verify-status", "");
    try {
      const { userId, email } = await this.auth.verifyEmail({ token });
      status("verify-status", `Email address verified: ${email}`);
      if (this.mine?.userId === userId) {
        byId("verify-notice").hidden = true;
      }
    } catch (error) {
      status("verify-status", failure(error), true);
    } finally {
      // Followed: a reload does not send it again.
      forgetLink();
    }
  }

  /** The form asking for a reset link, in place of the login form. */
  askForReset() {
    status("reset-status", "");
    status("reset-request-status", "");
    byId("login-form").hidden = true;
    byId("reset-request-form").hidden = false;
    byId("reset-email").focus();
  }

  /** Asks for a reset mail to `email`. The server answers the same
   * whether an account has the address or not, and so does the page. */
  async requestReset(email: string): Promise<void> {
    status("reset-request-status", "");
    try {
      await this.auth.requestPasswordReset({ email });
      status("reset-request-status", "If an account has that verified address, a reset link is on its way.");
    } catch (error) {
      status("reset-request-status", failure(error), true);
    }
  }

  /** From asking for a reset link back to the login form. */
  backToLogin() {
    byId<HTMLFormElement>("reset-request-form").reset();
    status("reset-request-status", "");
    byId("reset-request-form").hidden = true;
    byId("login-form").hidden = false;
  }

  /** The form setting a new password with a reset link's token. */
  showReset(token: string) {
    this.resetToken = token;
    byId<HTMLFormElement>("reset-form").reset();
    status("reset-form-status", "");
    byId("reset-view").hidden = false;
    byId("reset-new-password").focus();
  }

  /** Sets the new password: whether it was set. A failure is shown in the
   * form, which stays for another try. */
  async resetPassword(newPassword: string, newPasswordConfirm: string): Promise<boolean> {
    status("reset-form-status", "");
    try {
      await this.auth.resetPassword({ token: this.resetToken, newPassword, newPasswordConfirm });
    } catch (error) {
      // An unknown, expired or used link: only a new one helps.
      const used = codeOf(error) === Code.Unauthenticated ? "; ask for a new link from the login form" : "";
      status("reset-form-status", failure(error) + used, true);
      return false;
    }
    this.closeReset();
    return true;
  }

  /** Leaves the reset form, the link forgotten. */
  closeReset() {
    this.resetToken = "";
    forgetLink();
    byId<HTMLFormElement>("reset-form").reset();
    status("reset-form-status", "");
    byId("reset-view").hidden = true;
  }

  /** After a reset: the login form, saying what to do. */
  passwordChanged() {
    this.backToLogin();
    status("reset-status", "Password changed; log in with the new one.");
    byId("login-name").focus();
  }

  /** Logged out: the notice and every status cleared, the login form
   * back in place of asking for a link. */
  reset() {
    this.mine = undefined;
    byId("verify-notice").hidden = true;
    status("resend-status", "");
    status("verify-status", "");
    status("reset-status", "");
    this.backToLogin();
  }
}
