package cli

import (
	"io"
	"log/slog"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/sdk/redact"
)

// newLogger returns the process logger: JSON or text, always through the
// redacting handler.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	if c.Format == "text" {
		return slog.New(redact.NewHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}), nil))
	}
	return redact.NewJSONLogger(w, level, nil)
}
