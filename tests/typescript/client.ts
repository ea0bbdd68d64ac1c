// A strict TypeScript workstation: register, push, pull, all typed from the
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
  return page.changes.length + outcomes.length + page.cursor;
}
