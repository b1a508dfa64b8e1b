package audit_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	tlogfmt "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// fuzzKeys derives a fixed signed-note key pair for origin from seed, so
// that a corpus stays valid across runs without a key in the source.
func fuzzKeys(f *testing.F, origin string, seed byte) (note.Signer, note.Verifier) {
	f.Helper()
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)), origin)
	if err != nil {
		f.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		f.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	return s, v
}

func fuzzCheckpoint(f *testing.F, s note.Signer, origin string, size uint64, rootByte byte, extra string) []byte {
	f.Helper()
	body := tlogfmt.Checkpoint{Origin: origin, Size: size, Hash: bytes.Repeat([]byte{rootByte}, 32)}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(body) + extra}, s)
	if err != nil {
		f.Fatal(err)
	}
	return signed
}

const fuzzOrigin = "bulwark.test/fuzz"

func FuzzParseReceipt(f *testing.F) {
	s, _ := fuzzKeys(f, fuzzOrigin, 1)
	ck := fuzzCheckpoint(f, s, fuzzOrigin, 5, 9, "")
	var h tlog.Hash
	h[0] = 1
	f.Add(audit.FormatReceipt(4, tlog.RecordProof{h, h, h}, ck))
	f.Add(audit.FormatReceipt(0, nil, ck))
	f.Add((&audit.Receipt{Index: 3, Extra: []byte("ctx"), Proof: tlog.RecordProof{h}, Checkpoint: ck}).Marshal())
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 01\n\n" + string(ck)))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nextra \nindex 1\n\n"))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 1\n" + base64.StdEncoding.EncodeToString(h[:]) + "\r\n\n" + string(ck)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := audit.ParseReceipt(data)
		if err != nil {
			return
		}
		if r.Index < 0 || len(r.Proof) > 64 || len(r.Checkpoint) == 0 {
			t.Fatalf("accepted an invalid receipt: %+v", r)
		}
		// Parsing is strict: a receipt has one spelling.
		if got := r.Marshal(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding differs:\n%q\n%q", data, got)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	// Small seeds only: the fuzzer minimises every new input it finds,
	// and a large seed makes that take most of the fuzzing time.
	for _, e := range []*audit.Event{event(1)} {
		b, err := json.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{"class_uid":3002,"activity_id":1}`,
		`{"class_name":"http activity","activity_name":"get","status_id":2,"status":"failure","severity_id":99}`,
		`{"class_uid":6003,"activity_id":99,"activity_name":"Approve","unmapped":{"amount":12.50,"n":9007199254740993,"big":1e300,"neg":-0,"list":[1,2.5,{"x":"y"}]}}`,
		`{"class_uid":4001,"activity_id":6,"src_endpoint":{"ip":"10.0.0.1","port":443},"resources":[{"type":"account","uid":"acc-1"}]}`,
		`{"class_uid":3002,"activity_id":1,"message":"\u00e9\ud83d\ude00 <tag> &amp;","unmapped":{"k":"\u0000"}}`,
		`{"class_uid":3002,"activity_id":1,"unmapped":{"f":1.0000000000000002,"e":12345678901234567890}}`,
		`{"class_uid":3002,"activity_id":1,"time":-5}`,
		`{"class_uid":3002,"activity_id":1} {}`,
	} {
		f.Add([]byte(s))
	}
	now := time.UnixMilli(1_800_000_000_000)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := audit.DecodeEvent(data)
		if err != nil {
			return
		}
		if err := e.Normalize(now); err != nil {
			return
		}
		c1, err := e.Canonical()
		if err != nil {
			return
		}
		// The canonical form is an event, and its own canonical form.
		e2, err := audit.DecodeEvent(c1)
		if err != nil {
			t.Fatalf("canonical form %q does not decode: %v", c1, err)
		}
		if err := e2.Normalize(now); err != nil {
			t.Fatalf("canonical form %q does not normalise: %v", c1, err)
		}
		c2, err := e2.Canonical()
		if err != nil {
			t.Fatalf("canonical form %q does not canonicalise: %v", c1, err)
		}
		if !bytes.Equal(c1, c2) {
			t.Fatalf("canonical form is not stable:\n%s\n%s", c1, c2)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	s, v := fuzzKeys(f, fuzzOrigin, 1)
	other, _ := fuzzKeys(f, fuzzOrigin, 2)
	otherOrigin, _ := fuzzKeys(f, "bulwark.test/other", 1)
	good := fuzzCheckpoint(f, s, fuzzOrigin, 42, 7, "")
	f.Add(good)
	f.Add(fuzzCheckpoint(f, s, fuzzOrigin, 0, 0, ""))
	f.Add(fuzzCheckpoint(f, s, fuzzOrigin, 1<<63, 1, ""))
	f.Add(fuzzCheckpoint(f, s, fuzzOrigin, 3, 1, "extension line\n"))
	f.Add(fuzzCheckpoint(f, other, fuzzOrigin, 42, 7, ""))
	f.Add(fuzzCheckpoint(f, otherOrigin, "bulwark.test/other", 42, 7, ""))
	f.Add(bytes.Replace(good, []byte("\n42\n"), []byte("\n43\n"), 1))
	f.Add([]byte(strings.Replace(string(good), fuzzOrigin+"\n", "bulwark.test/fuzz \n", 1)))
	f.Add([]byte("bulwark.test/fuzz\n1\nAAAA\n\n— bulwark.test/fuzz AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := audit.ParseCheckpoint(data, fuzzOrigin, v)
		if err != nil {
			return
		}
		// Accepted: it must carry a valid signature by the log's key, over
		// a body that says what ParseCheckpoint returned.
		n, err := note.Open(data, note.VerifierList(v))
		if err != nil {
			t.Fatalf("accepted a checkpoint note.Open refuses: %v", err)
		}
		signed := false
		for _, sig := range n.Sigs {
			signed = signed || (sig.Name == v.Name() && sig.Hash == v.KeyHash())
		}
		if !signed {
			t.Fatal("accepted a checkpoint without the log's signature")
		}
		var cp tlogfmt.Checkpoint
		if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
			t.Fatalf("accepted an unparseable body: %v", err)
		}
		if cp.Origin != fuzzOrigin || int64(cp.Size) != ck.Size || !bytes.Equal(cp.Hash, ck.Root[:]) || ck.Size < 0 {
			t.Fatalf("parsed %+v from body %q", ck, n.Text)
		}
		if !bytes.Equal(ck.Note, data) {
			t.Fatal("the checkpoint's note is not the input")
		}
	})
}
