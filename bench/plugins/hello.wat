;; hello: an Extism plugin answering `{"message": "Hello <input>"}`.
;;
;; Written against the plain Extism kernel ABI (no PDK). The fixed parts come from the
;; plugin's own data segment; the input is copied 8 bytes at a time (input_load_u64 +
;; store_u64, the tail byte by byte). The input is inserted as is, not JSON-escaped: the
;; benchmark sends a plain name.
;;
;; Export: `hello` () -> i32, returning 0.

(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))

  (memory (export "memory") 1)
  (data (i32.const 0) "{\"message\": \"Hello ")  ;; 19 bytes at 0
  (data (i32.const 32) "\"}")                    ;; 2 bytes at 32

  ;; Copy $len bytes of this module's memory from $src to kernel address $dst.
  (func $put (param $dst i64) (param $src i32) (param $len i32)
    (local $i i32)
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8
          (i64.add (local.get $dst) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $byte))))

  (func (export "hello") (result i32)
    (local $n i64)
    (local $out i64)
    (local $at i64)
    (local $i i64)
    (local $words i64)
    (local.set $n (call $input_length))
    (local.set $out (call $alloc (i64.add (local.get $n) (i64.const 21))))
    (if (i64.eqz (local.get $out)) (then (return (i32.const 1))))
    (call $put (local.get $out) (i32.const 0) (i32.const 19))
    (local.set $at (i64.add (local.get $out) (i64.const 19)))
    (local.set $words (i64.and (local.get $n) (i64.const -8)))
    (block $done
      (loop $word
        (br_if $done (i64.ge_u (local.get $i) (local.get $words)))
        (call $store_u64
          (i64.add (local.get $at) (local.get $i))
          (call $input_load_u64 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $word)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8
          (i64.add (local.get $at) (local.get $i))
          (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $tail)))
    (call $put (i64.add (local.get $at) (local.get $n)) (i32.const 32) (i32.const 2))
    (call $output_set (local.get $out) (i64.add (local.get $n) (i64.const 21)))
    (i32.const 0)))
