// Package workload is the node agent of Bulwark's workload identity
// (`bulwark agent`): it joins the control plane once with a one-time join
// token, keeps its own X.509-SVID renewed, keeps one SVID for every
// registration entry assigned to it, follows the control plane's deny list,
// and serves the SPIFFE Workload API (the SpiffeWorkloadAPI gRPC service of
// github.com/spiffe/go-spiffe/v2) on a unix socket so that unmodified
// go-spiffe clients work against it.
//
// # Attestation
//
// Every RPC is attested from the kernel's view of the caller: SO_PEERCRED
// on the unix socket gives its uid, gid and pid, /proc/<pid>/exe its binary
// path and (hashed, cached by device, inode, size and mtime) the binary's
// SHA-256. The selectors produced are unix:uid:N, unix:gid:N (the primary
// gid), unix:path:P and unix:sha256:HEX. A workload receives the SVID of an
// entry only when ALL of the entry's selectors match it. A caller matching no
// entry gets codes.PermissionDenied, as SPIRE answers, and the refusal is
// audited through the control plane. Every RPC must carry the metadata
// header "workload.spiffe.io: true"; a call without it gets
// codes.InvalidArgument.
//
// # Socket permissions
//
// The socket is created with mode 0660 inside a directory of mode 0755: a
// workload must run as the agent's user or be a member of the agent's group
// (or the operator changes the socket's group) to connect at all.
// Attestation stays the access control that decides which identity a caller
// gets; the group is a second, coarse fence that keeps arbitrary local users
// from probing the API, and it narrows the pid-reuse window an attacker
// could race to local users already trusted with the group. A stale socket
// left by a crashed agent is removed at start; a socket another live agent
// is serving is not.
//
// # State and offline operation
//
// The agent's state (its key and SVID, the cached entries, workload SVIDs
// with their keys, the trust bundle and the deny list) lives in one file,
// <data_dir>/agent/state.sealed, sealed with the key-encryption key of the
// keystore in <data_dir>/agent/keys and replaced atomically on every
// change. When the control plane is unreachable the agent keeps serving the
// SVIDs that are still valid, from memory or after a restart from that file,
// and stops serving each one at its expiry: a workload is then refused,
// never handed an expired certificate.
//
// # Revocation and quarantine
//
// A goroutine long-polls the control plane's deny list. A denied SPIFFE ID
// or certificate serial is dropped from what is served at once (open
// FetchX509SVID streams receive the update or PermissionDenied) and is never
// requested or served again; the deny list is persisted with the state.
// DenyList follows the same deny list, in memory, for a process without an
// agent of its own (`bulwark gateway` checks its upstreams with it).
package workload
