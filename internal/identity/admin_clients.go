package identity

import "net/http"

func (s *Server) registerClientAdmin(mux *http.ServeMux, admin func(http.Handler) http.Handler) {}
