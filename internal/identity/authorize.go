package identity

import "net/http"

func (s *Server) registerAuthorize(mux *http.ServeMux) {}
