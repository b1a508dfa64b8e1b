// Package bank is Bulwark's demo bank: four small HTTP services — accounts,
// payments, ledger and notifications — each with its own SQLite database,
// each listening on loopback only behind its Bulwark agent and refusing, with
// sdk/peer, every request that did not come through that agent.
//
// The services trust only what their agent signed: the caller's SPIFFE ID
// (peer), the end user and the OAuth client of the internal token the agent
// verified, and the correlation id. They call each other only through their
// own agent's outbound listener ({OutboundURL}/<service>/...), so that every
// east-west hop is mutual TLS and authorized by the bank's Cedar policy.
//
// The walkthrough of `bulwark dev` uses four flows:
//
//   - GET /v1/accounts opens one demo account with a starting balance for a
//     new customer and lists the customer's accounts;
//   - POST /v1/payments validates a transfer, makes it idempotent on the
//     Idempotency-Key header, posts a double entry to the ledger
//     (payments → ledger) and notifies the customer (payments →
//     notifications);
//   - GET /v1/ledger/entries (the ledger's GET /v1/entries) shows the entries
//     and the balance of the customer's account;
//   - POST /v1/statements makes notifications call the ledger, a call the
//     bank's policy does not allow: it answers 502 and the denial is in the
//     audit trail.
//
// Demo simplification: every customer has exactly one account, whose id is
// derived from the customer's subject (see AccountID), so that payments and
// the ledger can check ownership without calling the accounts service.
//
// The package also embeds the bank's public API description (OpenAPI) and
// the gateway routes that expose it.
package bank
