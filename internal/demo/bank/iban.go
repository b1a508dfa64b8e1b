package bank

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
)

// Demo account constants.
const (
	// OpeningBalance is the starting balance of a new customer's demo
	// account, in minor units (EUR 1,000.00).
	OpeningBalance = 100000
	// Currency is the only currency of the demo bank.
	Currency = "EUR"
	// MaxPaymentAmount bounds one payment, in minor units (EUR 100,000.00).
	MaxPaymentAmount = 10000000
	// demoBankCode is the German bank code (BLZ) of the demo IBANs.
	demoBankCode = "10010010"
)

// AccountID returns the id of the demo account of the customer whose token
// subject is user: "acc_" and 24 hex digits of a hash of the subject. Every
// customer has exactly one demo account, so the payments and ledger services
// check ownership by recomputing it instead of calling the accounts service.
func AccountID(user string) string {
	sum := accountHash(user)
	return "acc_" + hex.EncodeToString(sum[:12])
}

// demoIBAN returns the German-format IBAN of the customer's demo account,
// with valid check digits.
func demoIBAN(user string) string {
	sum := accountHash(user)
	n := binary.BigEndian.Uint64(sum[12:20]) % 1e10
	bban := fmt.Sprintf("%s%010d", demoBankCode, n)
	return "DE" + ibanCheckDigits("DE", bban) + bban
}

func accountHash(user string) [32]byte {
	return sha256.Sum256([]byte("bulwark demo bank account v1\x00" + user))
}

// ibanCheckDigits computes the two ISO 13616 check digits of an IBAN.
func ibanCheckDigits(country, bban string) string {
	r := ibanMod97(bban + country + "00")
	return fmt.Sprintf("%02d", 98-r)
}

// ibanMod97 returns the ISO 7064 MOD 97-10 remainder of s, letters counting
// as 10..35; -1 if s holds another character.
func ibanMod97(s string) int {
	r := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			r = (r*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			v := int(c-'A') + 10
			r = (r*100 + v) % 97
		default:
			return -1
		}
	}
	return r
}

// validIBAN reports whether s is a well-formed IBAN (upper case, no spaces)
// with correct check digits.
func validIBAN(s string) bool {
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i < 2 && (c < 'A' || c > 'Z'):
			return false
		case i >= 2 && i < 4 && (c < '0' || c > '9'):
			return false
		case i >= 4 && !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z'):
			return false
		}
	}
	return ibanMod97(s[4:]+s[:4]) == 1
}

// formatAmount renders minor units as "12.34".
func formatAmount(minor int64) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return sign + strconv.FormatInt(minor/100, 10) + "." + fmt.Sprintf("%02d", minor%100)
}
