// A logged-in session: the access token is kept in memory only, and
// refreshed with the (rotating) refresh token before it expires.
import { Code, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../gen/ts/auth/v1/auth_pb";
import { UserService } from "../../gen/ts/auth/v1/user_pb";
import { codeOf } from "./errors";

/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 30_000;
/** The wait before trying a refresh again that could not reach auth. */
const REFRESH_RETRY_MS = 5_000;

/** The claims of an access token the page uses. */
interface Claims {
  sub: string;
  name: string;
  iat: number;
  exp: number;
}

function claimsOf(token: string): Claims {
  const payload = (token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes)) as Claims;
}

/** When, by this browser's clock, a token issued just now expires: its
 * lifetime counts from now, whatever the clocks of the two machines say. */
function expiryOf(claims: Claims): number {
  return Date.now() + Math.max(0, claims.exp - claims.iat) * 1000;
}

/** Device tokens, one per name logged in with on this browser, kept
 * across reloads: they are no credential, only what lets auth count this
 * browser's failed logins apart from strangers guessing the same name. */
export const deviceTokens = {
  key(username: string): string {
    return `chat.deviceToken.${username.toLowerCase()}`;
  },
  get(username: string): string {
    try {
      return localStorage.getItem(this.key(username)) ?? "";
    } catch {
      return "";
    }
  },
  set(username: string, token: string) {
    try {
      if (token) {
        localStorage.setItem(this.key(username), token);
      }
    } catch {
      // Storage refused (private mode, quota): the next login counts
      // against the name, as from any new device.
    }
  },
};

/** A login whose password was right and whose second factor is due. */
export interface SecondFactorDue {
  username: string;
  challenge: string;
}

export class Session {
  readonly userId: bigint;
  readonly username: string;
  private accessToken: string;
  private refreshToken: string;
  private expiresAt: number;
  private refreshing: Promise<void> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private ended = false;
  /** Told when the session can no longer be refreshed. */
  onExpired: (reason: unknown) => void = () => {};

  private constructor(
    private readonly auth: Client<typeof AuthService>,
    accessToken: string,
    refreshToken: string,
  ) {
    const claims = claimsOf(accessToken);
    this.userId = BigInt(claims.sub);
    this.username = claims.name;
    this.accessToken = accessToken;
    this.refreshToken = refreshToken;
    this.expiresAt = expiryOf(claims);
    this.schedule(this.expiresAt - REFRESH_MARGIN_MS - Date.now());
  }

  /** Logs in; for an account with two-factor login on, a right password
   * answers what `completeLogin` finishes with a code. */
  static async login(
    authUrl: string,
    username: string,
    password: string,
  ): Promise<Session | SecondFactorDue> {
    const auth = createClient(AuthService, transport(authUrl));
    const deviceToken = deviceTokens.get(username);
    const tokens = await auth.login({ username, password, deviceToken, acceptsSecondFactor: true });
    if (tokens.secondFactorChallenge) {
      return { username, challenge: tokens.secondFactorChallenge };
    }
    deviceTokens.set(username, tokens.deviceToken);
    return new Session(auth, tokens.accessToken, tokens.refreshToken);
  }

  /** Finishes a login with the authenticator's code or a recovery code. */
  static async completeLogin(authUrl: string, due: SecondFactorDue, code: string): Promise<Session> {
    const auth = createClient(AuthService, transport(authUrl));
    const tokens = await auth.completeLogin({ challenge: due.challenge, code });
    deviceTokens.set(due.username, tokens.deviceToken);
    return new Session(auth, tokens.accessToken, tokens.refreshToken);
  }

  /** Registers a user; logging in is separate. */
  static async register(authUrl: string, name: string, email: string, password: string) {
    const users = createClient(UserService, transport(authUrl));
    await users.create({ name, email, password, passwordConfirm: password });
  }

  /** A current access token, refreshed first if it is about to expire. */
  async token(): Promise<string> {
    if (Date.now() > this.expiresAt - REFRESH_MARGIN_MS / 3) {
      await this.refresh();
    }
    return this.accessToken;
  }

  /** Adds `authorization` to every call through a transport. A call
   * refused as unauthenticated tries a refresh: if the session itself was
   * ended (logged out, or ended from another device), that fails too, and
   * the page is told the session is over. */
  readonly authorize: Interceptor = (next) => async (request) => {
    request.header.set("authorization", `Bearer ${await this.token()}`);
    try {
      return await next(request);
    } catch (error) {
      if (codeOf(error) === Code.Unauthenticated && !this.ended) {
        await this.refresh().catch(() => {});
      }
      throw error;
    }
  };

  /** Trades the refresh token for a new one, then for an access token.
   * Auth out of reach: tried again shortly, the session kept. Auth
   * refusing (the session revoked or expired): the session is over. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const rotated = await this.auth.getRefreshToken({ refreshToken: this.refreshToken });
        // Held at once: the one presented is retired now.
        this.refreshToken = rotated.refreshToken;
        const access = await this.auth.getAccessToken({ refreshToken: this.refreshToken });
        this.accessToken = access.accessToken;
        this.expiresAt = expiryOf(claimsOf(access.accessToken));
        this.schedule(this.expiresAt - REFRESH_MARGIN_MS - Date.now());
      } catch (error) {
        const refused = [Code.Unauthenticated, Code.PermissionDenied, Code.NotFound];
        if (this.ended) {
          // Logged out meanwhile: nothing to keep going.
        } else if (refused.includes(codeOf(error) ?? Code.Unknown)) {
          this.stop();
          this.onExpired(error);
        } else {
          this.schedule(REFRESH_RETRY_MS);
        }
        throw error;
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** Ends the session on the server and here, after any refresh under way
   * (which would otherwise leave the newest refresh token alive). */
  async logout(): Promise<void> {
    this.stop();
    await this.refreshing?.catch(() => {});
    await this.auth.logout({ refreshToken: this.refreshToken });
  }

  private schedule(wait: number) {
    clearTimeout(this.timer);
    if (this.ended) {
      return;
    }
    this.timer = setTimeout(() => void this.refresh().catch(() => {}), Math.max(1_000, wait));
  }

  private stop() {
    this.ended = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** gRPC-Web, binary, to one service. */
export function transport(baseUrl: string, interceptors: Interceptor[] = []) {
  return createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors });
}
