/** Who is calling: resolved once per request by the protected scope's preHandler. */
export interface RequestUser {
  readonly id: string;
  readonly name: string;
  readonly email: string;
}

/** The caller and how it proved who it is. */
export type RequestCaller =
  | {
      readonly user: RequestUser;
      readonly via: 'session';
      /** When the session ends unless Better Auth extends it. */
      readonly expiresAt: Date;
    }
  | {
      readonly user: RequestUser;
      readonly via: 'apiKey';
      readonly keyId: string;
      /** When the presented key stops working (null: never); a key it creates may not outlive it. */
      readonly expiresAt: Date | null;
    };
