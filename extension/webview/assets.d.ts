// CSS imported for esbuild (bundled into dist/webview/profiler.css).
declare module '*.css';
