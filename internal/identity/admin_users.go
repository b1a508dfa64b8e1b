package identity

import "net/http"

func (s *Server) registerUserAdmin(mux *http.ServeMux, admin func(http.Handler) http.Handler) {}
