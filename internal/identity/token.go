package identity

import "net/http"

func (s *Server) registerToken(mux *http.ServeMux) {}
