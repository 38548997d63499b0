"""Client and upstream wire formats, one module per dialect: pure functions, no Django, no I/O.

Every module offers the same six pieces (hub and spoke through ``gateway.ir``):

    parse_request(body: dict) -> ir.Request            client side: the client's body to the IR
    render_request(req: ir.Request) -> dict            upstream side: the IR to this family's body
    parse_response(body: dict) -> ir.Response          upstream side: a non-stream answer to the IR
    render_response(resp: ir.Response, req) -> dict    client side: the IR to this dialect's answer
    StreamParser().feed(bytes) -> list[ir.Event]        upstream side: raw stream bytes to IR events,
                   .finish() -> list[ir.Event]          then whatever the end of the stream implies
    StreamRenderer(req).feed(ir.Event) -> bytes         client side: IR events to wire frames,
                       .finish() -> bytes               then the terminator (once)

plus ``error_body(status, message, code)`` and ``stream_error(status, message, code)`` in the
dialect's own envelope. ``BadRequest`` (here) is what a parse side raises for a body it cannot accept.
"""


class BadRequest(ValueError):
    """The client's body is not a valid request of its dialect (HTTP 400)."""
