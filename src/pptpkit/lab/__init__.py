"""Network-namespace lab: the demo, the benchmarks and the helpers the tests share.

Everything here builds private namespaces with TEST-NET addresses only and tears them down.
"""
