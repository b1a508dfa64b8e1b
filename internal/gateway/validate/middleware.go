package validate

import (
	"errors"
	"net/http"
	"strings"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Middleware checks every request with v before next sees it. A refused
// request gets the error as a JSON body (internal/httpapi) and onRefused,
// when not nil, is called with the original request and the refusal, for
// audit. Middleware does not strip headers: call SanitizeHeaders before the
// gateway sets its own identity headers.
func Middleware(v *Validator, onRefused func(r *http.Request, err *Error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out, err := v.Check(r)
			if err != nil {
				var ve *Error
				if !errors.As(err, &ve) {
					ve = refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request refused")
				}
				if onRefused != nil {
					onRefused(r, ve)
				}
				if len(ve.Allow) > 0 {
					w.Header().Set("Allow", strings.Join(ve.Allow, ", "))
				}
				httpapi.WriteError(w, r, nil, ve.HTTP())
				return
			}
			next.ServeHTTP(w, out)
		})
	}
}
