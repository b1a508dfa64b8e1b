package redact_test

import (
	"errors"
	"log/slog"
	"os"

	"github.com/bulwarksec/bulwark/sdk/redact"
)

// dropTime removes the time so that the example output is stable.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

func Example() {
	h := slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: dropTime})
	logger := slog.New(redact.NewHandler(h, nil))

	logger.Info("dial failed: password=hunter2 host=db",
		"user", "alice",
		"db_password", "hunter2",
		"card", "4111 1111 1111 1111",
		"note", "paid with 4111-1111-1111-1111, order 1234567890123456",
		"err", errors.New("upstream said: Authorization: Bearer abc.def.ghi"),
		slog.Group("session", slog.String("id", "s-42"), slog.Bool("mfa", true)),
		"token_type", "DPoP",
	)
	// Output:
	// {"level":"INFO","msg":"dial failed: password=[REDACTED] host=db","user":"alice","db_password":"[REDACTED]","card":"[REDACTED]","note":"paid with [REDACTED], order 1234567890123456","err":"upstream said: Authorization: [REDACTED]","session":{"id":"[REDACTED]","mfa":true},"token_type":"DPoP"}
}

func ExampleString() {
	os.Stdout.WriteString(redact.String("GET /cb?code=x&access_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.c2ln&state=y") + "\n")
	// Output:
	// GET /cb?code=x&access_token=[REDACTED]&state=y
}

func ExampleNewJSONLogger() {
	logger := redact.NewJSONLogger(os.Stderr, slog.LevelInfo, &redact.Options{
		ExtraKeys: []string{"merchant_ref"},
	})
	logger.Info("payment accepted", "merchant_ref", "m-991", "amount_cents", 1250)
}
