/**
 * The benchmark's yardstick: a bare `Deno.serve` that reads the body and answers 202, on the port
 * given as the first argument.
 *
 * @module
 */
const port = Number(Deno.args[0]);
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
  await req.arrayBuffer();
  return new Response('{"accepted":1}', {
    status: 202,
    headers: { "content-type": "application/json" },
  });
});
