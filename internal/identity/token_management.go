package identity

import "net/http"

func (s *Server) registerTokenManagement(mux *http.ServeMux) {}
