/**
 * The benchmark's JSON.parse ceiling: a bare `Deno.serve` that reads the body, `JSON.parse`s it and
 * answers 202 with the number of events, on the port given as the first argument. It does what any
 * JSON ingest must do before validating or storing anything. A body that is not JSON (such as the
 * empty `GET /healthz` of the start-up probe) gets 400.
 *
 * @module
 */
const port = Number(Deno.args[0]);
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await req.text());
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    return new Response('{"error":"not JSON"}', {
      status: 400,
      headers: { "content-type": "application/json" },
    });
  }
  const accepted = Array.isArray(parsed) ? parsed.length : 1;
  return new Response(`{"accepted":${accepted}}`, {
    status: 202,
    headers: { "content-type": "application/json" },
  });
});
