;; fib: n-th Fibonacci number, computed iteratively in i64.
;; ABI "core": fib(0) = 0, fib(1) = 1, fib(90) = 2880067194370816120.
;; Results wrap around (two's complement) for n > 92; negative n returns 0.
(module
  (memory (export "memory") 1)
  (func $fib (export "fib") (param $n i32) (result i64)
    (local $prev i64)
    (local $cur i64)
    (local $next i64)
    (local.set $prev (i64.const 0))
    (local.set $cur (i64.const 1))
    (if (i32.le_s (local.get $n) (i32.const 0))
      (then (return (i64.const 0))))
    ;; invariant: $cur = fib(k), $prev = fib(k-1), starting at k = 1
    (block $done
      (loop $step
        (br_if $done (i32.le_s (local.get $n) (i32.const 1)))
        (local.set $next (i64.add (local.get $prev) (local.get $cur)))
        (local.set $prev (local.get $cur))
        (local.set $cur (local.get $next))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $step)))
    (local.get $cur)))
