// Command grpc-floor-go is the Go half of bench/grpc_floor.py: a grpc-go
// server with one server-streaming method and nothing else of a destination
// server, to measure what grpc-go itself costs per open stream and per write.
//
// The service is declared by hand (a grpc.ServiceDesc) and every message is
// raw bytes (a codec that passes them through), so no protoc step is needed:
//
//	/floor.Floor/Stream  request ignored; one small message on open, then
//	                     every message a Tick hands it
//	/floor.Floor/Tick    request: the message size S in ASCII decimal; builds
//	                     one message of S bytes and hands the same slice to
//	                     every open stream (a buffered channel per stream);
//	                     answers the number of streams it reached, and of
//	                     streams whose channel was full (dropped), "N D"
//
// It prints "listening <address>" on stdout once it accepts connections.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// rawCodec sends a []byte as it is and receives into a *[]byte.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	// A SliceBuffer's Free does nothing: the shared slice is never recycled.
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*p = data.Materialize()
	return nil
}

// Name is "proto" so that clients sending plain application/grpc match it.
func (rawCodec) Name() string { return "proto" }

// floor keeps one channel per open stream.
type floor struct {
	mu      sync.Mutex
	streams map[chan []byte]struct{}
	hello   []byte
	depth   int
}

func (f *floor) stream(_ any, ss grpc.ServerStream) error {
	var request []byte
	if err := ss.RecvMsg(&request); err != nil {
		return err
	}
	ch := make(chan []byte, f.depth)
	f.mu.Lock()
	f.streams[ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, ch)
		f.mu.Unlock()
	}()
	if err := ss.SendMsg(f.hello); err != nil {
		return err
	}
	done := ss.Context().Done()
	for {
		select {
		case msg := <-ch:
			if err := ss.SendMsg(msg); err != nil {
				return err
			}
		case <-done:
			return nil
		}
	}
}

func (f *floor) tick(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var request []byte
	if err := dec(&request); err != nil {
		return nil, err
	}
	size, err := strconv.Atoi(strings.TrimSpace(string(request)))
	if err != nil || size < 0 || size > 4<<20 {
		return nil, status.Errorf(codes.InvalidArgument, "size: %q", request)
	}
	msg := make([]byte, size) // built once, shared by every stream
	for i := range msg {
		msg[i] = byte(i)
	}
	reached, dropped := 0, 0
	f.mu.Lock()
	for ch := range f.streams {
		select {
		case ch <- msg:
			reached++
		default:
			dropped++
		}
	}
	f.mu.Unlock()
	return []byte(fmt.Sprintf("%d %d", reached, dropped)), nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	depth := flag.Int("queue", 64, "messages a stream's channel holds")
	flag.Parse()

	f := &floor{streams: map[chan []byte]struct{}{}, hello: []byte("hello"), depth: *depth}
	desc := grpc.ServiceDesc{
		ServiceName: "floor.Floor",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Tick", Handler: f.tick}},
		Streams: []grpc.StreamDesc{
			{StreamName: "Stream", Handler: f.stream, ServerStreams: true},
		},
	}
	server := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}))
	server.RegisterService(&desc, f)

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", lis.Addr())
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.Stop()
	}()
	if err := server.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
