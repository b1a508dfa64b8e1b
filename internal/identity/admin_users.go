package identity

import (
	"context"
	"errors"
	"net/http"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Stable error codes of the user admin API, beside httpapi's.
const (
	// CodeInvalidUser: the username, profile or password does not pass
	// validation; the message names the field.
	CodeInvalidUser = "invalid_user"
	// CodeUserExists: the username is taken.
	CodeUserExists = "user_exists"
)

// maxUserBody bounds the JSON body of a user admin request.
const maxUserBody = 16 << 10

// UserList is the answer of GET /v1/identity/users.
type UserList struct {
	Users []*User `json:"users"`
}

// PasswordBody is the body of POST /v1/identity/users/{id}/password.
type PasswordBody struct {
	Password string `json:"password"`
}

// TOTPEnrollment is the answer of POST /v1/identity/users/{id}/totp: the
// otpauth:// URL, shown once.
type TOTPEnrollment struct {
	OTPAuthURL string `json:"otpauth_url"`
}

// registerUserAdmin serves the user admin API. {id} is a user ID or a
// username. No answer ever carries a password hash or a TOTP secret,
// except the otpauth URL of a new enrollment, once.
func (s *Server) registerUserAdmin(mux *http.ServeMux, admin func(http.Handler) http.Handler) {
	handle := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, admin(h)) }
	item := PathAdminUsers + "/{id}"
	handle("POST "+PathAdminUsers, s.adminCreateUser)
	handle("GET "+PathAdminUsers, s.adminListUsers)
	handle("GET "+item, s.adminGetUser)
	handle("DELETE "+item, s.adminDeleteUser)
	handle("POST "+item+"/password", s.adminSetPassword)
	handle("POST "+item+"/totp", s.adminEnrollTOTP)
	handle("DELETE "+item+"/totp", s.adminUserAction(s.disableTOTP))
	handle("POST "+item+"/unlock", s.adminUserAction(s.unlockUser))
	handle("POST "+item+"/disable", s.adminUserAction(func(ctx context.Context, r *http.Request, id string) error {
		return s.setUserDisabled(ctx, r, id, true)
	}))
	handle("POST "+item+"/enable", s.adminUserAction(func(ctx context.Context, r *http.Request, id string) error {
		return s.setUserDisabled(ctx, r, id, false)
	}))
}

func (s *Server) adminCreateUser(w http.ResponseWriter, r *http.Request) {
	var nu NewUser
	if err := httpapi.DecodeJSON(w, r, maxUserBody, &nu); err != nil {
		s.adminUserError(w, r, err)
		return
	}
	u, err := s.createUser(r.Context(), r, nu)
	if err != nil {
		s.adminUserError(w, r, err)
		return
	}
	w.Header().Set("Location", PathAdminUsers+"/"+u.ID)
	httpapi.WriteJSON(w, http.StatusCreated, u)
}

func (s *Server) adminListUsers(w http.ResponseWriter, r *http.Request) {
	users, err := s.ListUsers(r.Context())
	if err != nil {
		s.adminUserError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, UserList{Users: users})
}

func (s *Server) adminGetUser(w http.ResponseWriter, r *http.Request) {
	u, err := s.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		s.adminUserError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, u)
}

func (s *Server) adminDeleteUser(w http.ResponseWriter, r *http.Request) {
	if err := s.deleteUser(r.Context(), r, r.PathValue("id")); err != nil {
		s.adminUserError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminSetPassword(w http.ResponseWriter, r *http.Request) {
	var body PasswordBody
	if err := httpapi.DecodeJSON(w, r, maxUserBody, &body); err != nil {
		s.adminUserError(w, r, err)
		return
	}
	if err := s.setPassword(r.Context(), r, r.PathValue("id"), body.Password); err != nil {
		s.adminUserError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminEnrollTOTP(w http.ResponseWriter, r *http.Request) {
	u, err := s.enrollTOTP(r.Context(), r, r.PathValue("id"))
	if err != nil {
		s.adminUserError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, TOTPEnrollment{OTPAuthURL: u})
}

// adminUserAction serves a body-less change to user {id} and answers with
// the user as it is afterwards.
func (s *Server) adminUserAction(change func(ctx context.Context, r *http.Request, id string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := change(r.Context(), r, r.PathValue("id")); err != nil {
			s.adminUserError(w, r, err)
			return
		}
		u, err := s.GetUser(r.Context(), r.PathValue("id"))
		if err != nil {
			s.adminUserError(w, r, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, u)
	}
}

// adminUserError maps user errors to API errors with stable codes.
func (s *Server) adminUserError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalidUser):
		err = &httpapi.Error{Status: http.StatusBadRequest, Code: CodeInvalidUser, Message: err.Error()}
	case errors.Is(err, ErrUserExists):
		err = httpapi.Errorf(http.StatusConflict, CodeUserExists, "a user with this username exists already")
	case errors.Is(err, ErrUserNotFound):
		err = httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no user with this ID or username")
	}
	httpapi.WriteError(w, r, s.log, err)
}
