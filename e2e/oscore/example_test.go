package oscore_test

import (
	"fmt"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/e2e/oscore"
)

func Example() {
	secret := []byte("0123456789abcdef")
	client, err := oscore.NewContext(oscore.Config{Params: oscore.Params{
		MasterSecret: secret, SenderID: []byte{}, RecipientID: []byte{1},
	}})
	if err != nil {
		panic(err)
	}
	server, err := oscore.NewContext(oscore.Config{Params: oscore.Params{
		MasterSecret: secret, SenderID: []byte{1}, RecipientID: []byte{},
	}})
	if err != nil {
		panic(err)
	}

	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: 1, Token: []byte{7}}
	req.Options = req.Options.Insert(coap.URIHost, []byte("node7")).Insert(coap.URIPath, []byte("temp"))
	preq, cex, err := client.ProtectRequest(req)
	if err != nil {
		panic(err)
	}
	fmt.Println("on the wire:", preq.Code, len(preq.Options), "outer options")

	got, sex, err := server.UnprotectRequest(preq)
	if err != nil {
		panic(err)
	}
	path, _ := got.Options.Get(coap.URIPath)
	fmt.Println("server sees:", got.Code, string(path))

	presp, err := sex.ProtectResponse(&coap.Message{Type: coap.Acknowledgement, Code: coap.Content, MID: 1, Token: []byte{7}, Payload: []byte("21.5")})
	if err != nil {
		panic(err)
	}
	resp, err := cex.UnprotectResponse(presp)
	if err != nil {
		panic(err)
	}
	fmt.Println("client sees:", resp.Code, string(resp.Payload))

	if _, _, err := server.UnprotectRequest(preq); err != nil {
		e, _ := oscore.ErrorResponse(preq, err)
		fmt.Println("replayed:", e.Code, string(e.Payload))
	}
	// Output:
	// on the wire: POST 2 outer options
	// server sees: GET temp
	// client sees: Content(2.05) 21.5
	// replayed: Unauthorized(4.01) Replay detected
}
