// A strict TypeScript workstation: register, push, pull, scope, all typed from the
// exported OpenAPI schema (generated/api.d.ts, made by openapi-typescript).
// tests/test_typescript_client.py generates the types and type-checks this
// file with `tsc --strict`; it is not run against a server.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api";

type Mutation = components["schemas"]["Mutation"];
type PushResponse = components["schemas"]["PushResponse"];
type PullResponse = components["schemas"]["PullResponse"];
type ErrorResponse = components["schemas"]["ErrorResponse"];

export async function syncOnce(baseUrl: string, customerKey: string): Promise<number> {
  const asCustomer = createClient<paths>({ baseUrl, headers: { "X-API-Key": customerKey } });
  const registered = await asCustomer.POST("/api/v1/auth/workstations/register", {
    body: { name: "ws-7 (north gate van)" },
  });
  if (registered.error) {
    const error: ErrorResponse = registered.error;
    throw new Error(`${error.error.code}: ${error.error.message}`);
  }
  const workstationId: string = registered.data.id;
  const workstation = createClient<paths>({
    baseUrl,
    headers: { "X-API-Key": registered.data.api_key },
  });

  // `force` is optional, as the protocol says.
  const mutation: Mutation = {
    mutation_id: 1,
    type: "venue",
    id: "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10",
    op: "upsert",
    base_version: 0,
    data: { name: "Harbour Mall" },
  };
  const pushed = await workstation.POST("/api/v1/sync/push", {
    body: { workstation_id: workstationId, protocol_version: 1, mutations: [mutation] },
  });
  if (pushed.error) {
    throw new Error(pushed.error.error.code);
  }
  const answer: PushResponse = pushed.data;
  const outcomes: string[] = answer.results.map((result) => result.status);

  const pulled = await workstation.GET("/api/v1/sync/pull", {
    params: { query: { since: 0, limit: 500 } },
  });
  if (pulled.error) {
    const status: string = pulled.error.error.code;
    throw new Error(status);
  }
  const page: PullResponse = pulled.data;

  // Protocol v2: sync one venue only. Send the cursor and the scope_version
  // of the last scope answer held (0: none), then pull from the answered cursor.
  const scoped = await workstation.PUT("/api/v1/sync/scope", {
    body: { venues: [mutation.id], cursor: page.cursor, scope_version: 0 },
  });
  if (scoped.error) {
    throw new Error(scoped.error.error.code);
  }
  const scopeVersion: number = scoped.data.scope_version;
  const venues: string[] | null = scoped.data.venues ?? null;
  const backfill = await workstation.GET("/api/v1/sync/pull", {
    params: { query: { since: scoped.data.cursor, limit: 500 } },
  });
  if (backfill.error) {
    throw new Error(backfill.error.error.code);
  }
  const removed = backfill.data.changes.filter((change) => change.op === "delete").length;
  return page.changes.length + outcomes.length + page.cursor + scopeVersion + removed +
    (venues?.length ?? 0);
}
