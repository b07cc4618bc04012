/*
 * The Live tab's player (docs/live_protocol.md): one WebSocket per live session, microphone audio out in 20 ms
 * packets, frames and the avatar's voice in, drawn and played on one clock.
 *
 * Loaded once per page from the document head, so `window.dittoLive` exists before the Live tab is opened:
 * start({mode, text}), stop(), stats() are a public contract (outside checks and embedding pages call them);
 * speak(text), playFile(), interrupt() and setControls({...}) are what the tab's buttons use.
 *
 * Timing, in one sentence: media time t on the server's session clock is played (audio) and shown (video) at
 * T0 + t + D on the player clock, where T0 is the player clock when the session went live and D the playout
 * delay, measured from how late frames arrive plus a small jitter margin. The player clock is the audio output
 * clock (what is audible now) whenever audio can play, so the picture follows the sound and cannot drift from it.
 * D only moves while no avatar audio is waiting to be played; while the avatar speaks, frames that come too late
 * are skipped (and counted) rather than delaying the picture.
 */
(function () {
  "use strict";
  if (window.dittoLive) {
    return;
  }

  var FPS = 25;
  var FRAME_S = 1 / FPS;
  var RATE = 16000;
  var PACKET = 320; // 20 ms at 16 kHz
  var MARGIN_S = { microphone: 0.06, file: 0.08, text: 0.08 }; // the jitter buffer on top of measured lateness
  var RECENT_S = 3.0; // lateness samples kept for the playout delay
  var START_TIMEOUT_MS = 600000; // a queued start may wait this long for its turn
  // Avatar audio waits until this many frames, spread over this much time, have shown how late frames come: the
  // delay cannot grow under the voice once it plays, so it is measured over at least two motion clips first.
  var AUDIO_WAIT_FRAMES = 5;
  var AUDIO_WAIT_S = 0.4;
  var MODES = { microphone: "microphone", mic: "microphone", file: "file", "speech file": "file", text: "text" };
  var LIVE_CONTROLS = ["emotion", "gaze_lock", "pitch_offset", "yaw_offset", "roll_offset", "pitch_amplitude",
    "yaw_amplitude", "roll_amplitude", "expression_amplitude", "lip_amplitude"];
  var EMOTION_DEFAULT = /^checkpoint default/i;

  var CAPTURE_WORKLET = [
    "class DittoCapture extends AudioWorkletProcessor {",
    "  process(inputs) {",
    "    const channels = inputs[0];",
    "    if (channels && channels.length) {",
    "      const mono = new Float32Array(channels[0].length);",
    "      for (const channel of channels) { for (let i = 0; i < mono.length; i++) mono[i] += channel[i]; }",
    "      if (channels.length > 1) { for (let i = 0; i < mono.length; i++) mono[i] /= channels.length; }",
    "      this.port.postMessage(mono, [mono.buffer]);",
    "    }",
    "    return true;",
    "  }",
    "}",
    "registerProcessor('ditto-capture', DittoCapture);",
  ].join("\n");

  function $(selector) {
    return document.querySelector(selector);
  }

  function median(values) {
    if (!values.length) {
      return null;
    }
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    var mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  function quantile(values, q) {
    if (!values.length) {
      return null;
    }
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  function round(value, digits) {
    if (value === null || value === undefined || !isFinite(value)) {
      return null;
    }
    var scale = Math.pow(10, digits || 0);
    return Math.round(value * scale) / scale;
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function seconds(ms) {
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  // ------------------------------------------------------------------------------------- microphone capture

  /** Any rate to 16 kHz: a windowed-sinc low-pass, then linear interpolation (used when the context is not 16 kHz). */
  function Downsampler(inRate) {
    this.step = inRate / RATE;
    this.pass = Math.abs(this.step - 1) < 1e-9;
    var taps = 63;
    var cutoff = 0.45 / this.step; // cycles per input sample: just under the 8 kHz Nyquist of the output
    this.taps = new Float32Array(taps);
    var sum = 0;
    for (var k = 0; k < taps; k++) {
      var x = k - (taps - 1) / 2;
      var sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
      var blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * k) / (taps - 1)) +
        0.08 * Math.cos((4 * Math.PI * k) / (taps - 1));
      this.taps[k] = sinc * blackman;
      sum += this.taps[k];
    }
    for (var j = 0; j < taps; j++) {
      this.taps[j] /= sum;
    }
    this.buffer = new Float32Array(0);
    this.position = 0;
  }

  Downsampler.prototype.filtered = function (buffer, index) {
    var taps = this.taps;
    var total = 0;
    for (var k = 0; k < taps.length; k++) {
      var j = index - k;
      if (j >= 0) {
        total += taps[k] * buffer[j];
      }
    }
    return total;
  };

  Downsampler.prototype.process = function (input) {
    if (this.pass) {
      return input;
    }
    var buffer = new Float32Array(this.buffer.length + input.length);
    buffer.set(this.buffer);
    buffer.set(input, this.buffer.length);
    var out = [];
    while (Math.floor(this.position) + 1 < buffer.length) {
      var i = Math.floor(this.position);
      var a = this.filtered(buffer, i);
      var b = this.filtered(buffer, i + 1);
      out.push(a + (b - a) * (this.position - i));
      this.position += this.step;
    }
    var keep = Math.max(0, Math.floor(this.position) - (this.taps.length - 1));
    this.buffer = buffer.slice(keep);
    this.position -= keep;
    return Float32Array.from(out);
  };

  /**
   * The microphone as 20 ms int16 packets at 16 kHz, each stamped with the performance.now() time of its first
   * sample. Capture times come from a sample counter anchored at the earliest arrival seen, so a busy page
   * (decoding frames, drawing) does not make audio look later than it was captured.
   */
  function Microphone(context, onPacket) {
    this.context = context;
    this.onPacket = onPacket;
    this.stream = null;
    this.nodes = [];
    this.pending = new Float32Array(0);
    this.samples = 0; // 16 kHz samples produced so far
    this.sent = 0; // of which already sent
    this.anchor = Infinity; // performance.now() of sample 0
    this.downsampler = new Downsampler(context.sampleRate);
    this.active = false;
    this.kind = null;
  }

  Microphone.prototype.open = async function () {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("This page cannot use a microphone here: open it over https (or on localhost).");
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (error) {
      throw new Error("The browser did not allow the microphone (" + (error && error.name ? error.name : error) +
        "). Allow it in the address bar and press Start again.");
    }
    var context = this.context;
    var source = context.createMediaStreamSource(this.stream);
    var mute = context.createGain(); // the capture node must reach the output to run; your voice is not played
    mute.gain.value = 0;
    mute.connect(context.destination);
    var self = this;
    if (context.audioWorklet && window.AudioWorkletNode) {
      var url = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "application/javascript" }));
      try {
        await context.audioWorklet.addModule(url);
      } finally {
        URL.revokeObjectURL(url);
      }
      var node = new AudioWorkletNode(context, "ditto-capture", { numberOfInputs: 1, numberOfOutputs: 1,
        outputChannelCount: [1] });
      node.port.onmessage = function (event) { self.take(event.data); };
      source.connect(node);
      node.connect(mute);
      this.nodes = [source, node, mute];
      this.kind = "audioworklet";
    } else {
      var processor = context.createScriptProcessor(1024, 1, 1);
      processor.onaudioprocess = function (event) {
        self.take(new Float32Array(event.inputBuffer.getChannelData(0)));
      };
      source.connect(processor);
      processor.connect(mute);
      this.nodes = [source, processor, mute];
      this.kind = "scriptprocessor";
    }
  };

  Microphone.prototype.take = function (block) {
    var arrived = performance.now();
    var resampled = this.downsampler.process(block);
    if (!resampled.length) {
      return;
    }
    this.samples += resampled.length;
    this.anchor = Math.min(this.anchor, arrived - (this.samples * 1000) / RATE);
    if (!this.active) {
      this.sent = this.samples; // before the session is live: nothing is sent, nothing piles up
      this.pending = new Float32Array(0);
      return;
    }
    var joined = new Float32Array(this.pending.length + resampled.length);
    joined.set(this.pending);
    joined.set(resampled, this.pending.length);
    var offset = 0;
    while (joined.length - offset >= PACKET) {
      var captured = this.anchor + (this.sent * 1000) / RATE;
      this.onPacket(captured, joined.subarray(offset, offset + PACKET));
      offset += PACKET;
      this.sent += PACKET;
    }
    this.pending = joined.slice(offset);
  };

  Microphone.prototype.close = function () {
    this.active = false;
    this.nodes.forEach(function (node) {
      try {
        node.disconnect();
      } catch (error) {
        // already disconnected
      }
    });
    this.nodes = [];
    if (this.stream) {
      this.stream.getTracks().forEach(function (track) { track.stop(); });
      this.stream = null;
    }
  };

  function micPacket(capturedMs, samples) {
    var buffer = new ArrayBuffer(9 + samples.length * 2);
    var view = new DataView(buffer);
    view.setUint8(0, 0x01);
    view.setFloat64(1, capturedMs, true);
    for (var i = 0; i < samples.length; i++) {
      var s = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(9 + 2 * i, Math.round(s * 32767), true);
    }
    return buffer;
  }

  // -------------------------------------------------------------------------------------------- the session

  function freshStats(mode) {
    return {
      state: "idle", mode: mode || null, transport: "websocket", message: "", error: null, busy_ahead: null,
      speaking: false, audio_playing: false, onset_to_motion_ms: null, onsets_ms: [], frame_delay_ms: null,
      fps: 0, av_offset_ms: null, frames: 0, late_frames: 0, dropped_audio_ms: 0, player_dropped_audio_ms: 0,
      server_dropped_audio_ms: 0, server_dropped_frames: 0, server_fps: null, behind_s: null, playout_delay_ms: null,
      audio_buffers: 0, audio_peak: 0, muted_audio_ms: 0, speak_to_sound_ms: null, interrupt_ms: null, rtt_ms: null,
      capture: null, audio_clock: null, started_ms: null, live_ms: null, first_frame_ms: null,
    };
  }

  function Session(player, mode, text) {
    this.player = player;
    this.mode = mode;
    this.text = text;
    this.stats = freshStats(mode);
    this.requestId = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this.ws = null;
    this.context = null;
    this.analyser = null;
    this.output = null;
    this.usesAudioClock = false;
    this.mic = null;
    this.T0 = null; // player clock (s) at the live message
    this.livePerf = null;
    this.delay = null; // playout delay D (s)
    this.lateness = []; // [player clock, lateness s]
    this.frames = []; // decoded, waiting to be shown, by media time
    this.shownTimes = [];
    this.delays = [];
    this.offsets = [];
    this.shown = null;
    this.framesSeen = 0;
    this.firstFrameAt = null;
    this.ready = false;
    this.sources = []; // scheduled avatar audio: {node, start, end, media}
    this.waitingAudio = []; // avatar audio that came before the delay was known
    this.muteBefore = -Infinity; // audio before this media time belongs to an interrupted utterance
    this.onsets = []; // speech onsets waiting for their first frame
    this.speakRequests = []; // performance.now() of each speak / play request waiting for its first sound
    this.interruptAt = null;
    this.closed = false;
    this.ended = null;
    this.readyTimer = null;
    this.levels = new Float32Array(256);
    var self = this;
    this.liveSeen = new Promise(function (resolve, reject) { self.resolveLive = resolve; self.rejectLive = reject; });
    this.endedSeen = new Promise(function (resolve) { self.resolveEnded = resolve; });
    this.liveSeen.catch(function () { return null; });
  }

  /** The player clock in seconds: the audible audio time when sound can play, performance time otherwise. */
  Session.prototype.clock = function () {
    var context = this.context;
    if (this.usesAudioClock && context) {
      if (context.getOutputTimestamp) {
        var stamp = context.getOutputTimestamp();
        if (stamp && stamp.performanceTime > 0 && stamp.contextTime > 0) {
          return stamp.contextTime + (performance.now() - stamp.performanceTime) / 1000;
        }
      }
      return context.currentTime - (context.outputLatency || context.baseLatency || 0);
    }
    return performance.now() / 1000;
  };

  /** performance.now() (ms) at which player-clock time `when` is (or was) reached. */
  Session.prototype.perfAt = function (when) {
    return performance.now() + (when - this.clock()) * 1000;
  };

  Session.prototype.setState = function (state, message) {
    this.stats.state = state;
    if (message !== undefined) {
      this.stats.message = message;
    }
    this.player.render();
  };

  Session.prototype.prepareAudio = async function () {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) {
      return;
    }
    try {
      this.context = new Context({ sampleRate: RATE, latencyHint: "interactive" });
    } catch (error) {
      this.context = new Context({ latencyHint: "interactive" }); // capture is resampled in the page then
    }
    var context = this.context;
    this.output = context.createGain();
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 512;
    this.output.connect(this.analyser);
    this.analyser.connect(context.destination);
    if (context.state !== "running") {
      try {
        await Promise.race([context.resume(), sleep(300)]);
      } catch (error) {
        // a page without a user gesture: the clock falls back to performance time, the avatar is silent
      }
    }
    this.usesAudioClock = context.state === "running";
    this.stats.audio_clock = this.usesAudioClock;
  };

  Session.prototype.begin = async function () {
    var stats = this.stats;
    stats.started_ms = performance.now();
    this.setState("starting", "Getting a place on the server…");
    await this.prepareAudio();
    if (this.mode === "microphone") {
      if (!this.context) {
        throw new Error("This browser has no Web Audio: the microphone mode cannot run here.");
      }
      var self = this;
      this.mic = new Microphone(this.context, function (captured, samples) { self.sendMic(captured, samples); });
      await this.mic.open();
      stats.capture = this.mic.kind;
    }
    var ticket = await this.player.requestTicket(this);
    if (this.closed) {
      return;
    }
    this.connect(ticket);
  };

  Session.prototype.connect = function (ticket) {
    var url = new URL(ticket.path, document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    var self = this;
    var opened = false;
    this.setState("starting", "Connecting…");
    ws.onopen = function () {
      opened = true;
      self.send({ type: "hello", mode: self.mode, client_time_ms: performance.now() });
    };
    ws.onmessage = function (event) {
      if (typeof event.data === "string") {
        self.onJson(JSON.parse(event.data));
      } else {
        self.onBinary(event.data);
      }
    };
    ws.onerror = function () {
      if (!opened) {
        self.player.offerFallback();
      }
    };
    ws.onclose = function (event) {
      var message = self.stats.error || self.endMessage;
      if (!opened) {
        message = "The live connection could not be opened (a proxy or firewall may block WebSockets). " +
          "Use the fallback below.";
        self.player.offerFallback();
      } else if (!message) {
        message = event.code === 1000 ? "The live session ended." : "The live connection closed (code " +
          event.code + ").";
      }
      self.finish(message, !opened || (event.code !== 1000 && event.code !== 1001 && !self.endMessage));
    };
  };

  Session.prototype.send = function (message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  };

  Session.prototype.sendMic = function (captured, samples) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.T0 !== null) {
      this.ws.send(micPacket(captured, samples));
    }
  };

  Session.prototype.onJson = function (message) {
    var stats = this.stats;
    if (message.type === "state") {
      if (message.state === "starting") {
        this.setState("starting", message.message || "Getting the portrait ready…");
      } else if (message.state === "live") {
        this.T0 = this.clock();
        this.livePerf = performance.now();
        stats.live_ms = round(this.livePerf - stats.started_ms, 0);
        stats.message = "Live.";
        if (this.mic) {
          this.mic.active = true;
        }
        var self = this;
        this.pinger = setInterval(function () { self.send({ type: "ping", client_time_ms: performance.now() }); },
          2000);
        this.player.render();
      } else if (message.state === "speaking") {
        stats.speaking = true;
        if (this.muteBefore === Infinity && typeof message.media_time === "number") {
          this.muteBefore = message.media_time; // a new utterance after an interrupt: its audio plays
        }
        this.player.render();
      } else if (message.state === "idle") {
        stats.speaking = false;
        if (message.message === "interrupted") {
          this.muteBefore = message.media_time;
          this.silence();
        }
        this.player.render();
      } else if (message.state === "ended") {
        this.endMessage = message.message || "The live session ended.";
      }
    } else if (message.type === "speech_onset") {
      this.onsets.push({ media: message.media_time, captured: message.client_time_ms });
    } else if (message.type === "stats") {
      stats.server_fps = message.server_fps;
      stats.behind_s = message.behind_s;
      stats.server_dropped_audio_ms = message.dropped_audio_ms || 0;
      stats.server_dropped_frames = message.dropped_frames || 0;
      stats.dropped_audio_ms = round(stats.server_dropped_audio_ms + stats.player_dropped_audio_ms, 0);
      this.player.render();
    } else if (message.type === "error") {
      if (message.fatal) {
        stats.error = message.message;
      } else {
        stats.message = message.message;
      }
      this.player.render();
    } else if (message.type === "pong" && typeof message.client_time_ms === "number") {
      stats.rtt_ms = round(performance.now() - message.client_time_ms, 1);
    }
  };

  Session.prototype.onBinary = function (data) {
    var view = new DataView(data);
    var kind = view.getUint8(0);
    if (kind === 0x02) {
      this.onVideo(view.getFloat64(1, true), view.getUint32(9, true), view.getFloat64(13, true),
        new Blob([new Uint8Array(data, 21)], { type: "image/jpeg" }));
    } else if (kind === 0x03) {
      var count = (data.byteLength - 9) >> 1;
      var samples = new Float32Array(count);
      for (var i = 0; i < count; i++) {
        samples[i] = view.getInt16(9 + 2 * i, true) / 32768;
      }
      this.onAudio(view.getFloat64(1, true), samples);
    }
  };

  Session.prototype.onVideo = function (media, index, drivenBy, blob) {
    var self = this;
    createImageBitmap(blob).then(function (bitmap) {
      if (self.closed || self.T0 === null) {
        bitmap.close();
        return;
      }
      var now = self.clock();
      var late = now - self.T0 - media;
      self.lateness.push([now, late]);
      while (self.lateness.length && self.lateness[0][0] < now - RECENT_S) {
        self.lateness.shift();
      }
      self.framesSeen += 1;
      if (self.firstFrameAt === null) {
        self.firstFrameAt = now;
      }
      var margin = MARGIN_S[self.mode] || 0.08;
      if (self.delay === null) {
        self.delay = late + margin;
      } else if (late + 0.01 > self.delay && !self.audioAhead(now)) {
        self.delay = late + margin; // frames come later than the delay allows: wait longer (nothing to hear yet)
      }
      var frame = { media: media, index: index, drivenBy: isFinite(drivenBy) ? drivenBy : null, bitmap: bitmap };
      var frames = self.frames;
      var at = frames.length;
      while (at > 0 && frames[at - 1].media > media) {
        at -= 1;
      }
      frames.splice(at, 0, frame);
      if (!self.ready && self.delayKnown(now)) {
        self.ready = true;
        self.whenReady();
      }
      if (self.delayKnown(now) && self.waitingAudio.length) {
        var waiting = self.waitingAudio;
        self.waitingAudio = [];
        waiting.forEach(function (item) { self.schedule(item[0], item[1]); });
      }
    }).catch(function () {
      self.stats.late_frames += 1; // an undecodable frame counts as one not shown
    });
  };

  /**
   * The delay is known: now the file or the start's text can be asked for. Asking earlier would only make the
   * first words wait for the delay, or be cut if they came due before it was known.
   */
  Session.prototype.whenReady = function () {
    if (this.mode === "file") {
      this.playFile();
    } else if (this.text) {
      this.speak(this.text);
    }
  };

  /** Enough frames have come to trust the playout delay with the avatar's voice. */
  Session.prototype.delayKnown = function (now) {
    return this.framesSeen >= AUDIO_WAIT_FRAMES && this.firstFrameAt !== null &&
      now - this.firstFrameAt >= AUDIO_WAIT_S;
  };

  /** True while avatar audio is scheduled beyond `now` (the playout delay must not move then). */
  Session.prototype.audioAhead = function (now) {
    for (var i = 0; i < this.sources.length; i++) {
      if (this.sources[i].end > now) {
        return true;
      }
    }
    return false;
  };

  Session.prototype.onAudio = function (media, samples) {
    if (media < this.muteBefore || this.closed || this.T0 === null) {
      return;
    }
    if (this.delay === null || !this.delayKnown(this.clock())) {
      this.waitingAudio.push([media, samples]);
      return;
    }
    this.schedule(media, samples);
  };

  Session.prototype.schedule = function (media, samples) {
    var context = this.context;
    var stats = this.stats;
    if (!context || !this.usesAudioClock) {
      stats.muted_audio_ms += (samples.length * 1000) / RATE; // the browser blocks sound on this page
      return;
    }
    var when = this.T0 + media + this.delay; // player (audible) clock
    var renderAhead = context.currentTime - this.clock(); // the render clock runs ahead of what is audible
    var startAt = when + renderAhead;
    var skip = 0;
    var earliest = context.currentTime + 0.01;
    if (startAt < earliest) {
      skip = Math.min(samples.length, Math.ceil((earliest - startAt) * RATE));
      stats.player_dropped_audio_ms += (skip * 1000) / RATE;
      stats.dropped_audio_ms = round(stats.server_dropped_audio_ms + stats.player_dropped_audio_ms, 0);
      if (skip >= samples.length) {
        return;
      }
    }
    var buffer = context.createBuffer(1, samples.length - skip, RATE);
    buffer.getChannelData(0).set(samples.subarray(skip));
    var node = context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.output);
    var start = when + skip / RATE;
    node.start(startAt + skip / RATE);
    var item = { node: node, start: start, end: when + samples.length / RATE, media: media + skip / RATE,
      delay: this.delay };
    this.sources.push(item);
    var self = this;
    node.onended = function () {
      var at = self.sources.indexOf(item);
      if (at >= 0) {
        self.sources.splice(at, 1);
      }
    };
    stats.audio_buffers += 1;
    if (this.speakRequests.length) {
      var asked = this.speakRequests.shift();
      stats.speak_to_sound_ms = round(this.perfAt(start) - asked, 0);
    }
  };

  /** Stop every scheduled piece of avatar audio now (interrupt). */
  Session.prototype.silence = function () {
    this.sources.forEach(function (item) {
      try {
        item.node.stop();
      } catch (error) {
        // not started yet or already ended
      }
    });
    this.sources = [];
    this.waitingAudio = [];
  };

  /** The media time being heard now, and the piece of audio that plays it (for onset and offset figures). */
  Session.prototype.audibleAt = function (media) {
    for (var i = 0; i < this.sources.length; i++) {
      var item = this.sources[i];
      if (item.media <= media + 1e-6 && media < item.media + (item.end - item.start)) {
        return this.T0 + media + item.delay;
      }
    }
    return null;
  };

  /** Called every animation frame: show the newest frame that is due, skip the ones whose moment passed. */
  Session.prototype.tick = function () {
    if (this.T0 === null || this.delay === null) {
      return;
    }
    var now = this.clock();
    var due = now - this.T0 - this.delay; // the media time on screen now
    var chosen = null;
    while (this.frames.length && this.frames[0].media <= due) {
      if (chosen) {
        chosen.bitmap.close();
        this.stats.late_frames += 1; // never shown: a newer frame is already due
      }
      chosen = this.frames.shift();
    }
    if (chosen && due - chosen.media > FRAME_S) {
      chosen.bitmap.close(); // its moment has passed: showing it now would put the picture out of sync
      this.stats.late_frames += 1;
      chosen = null;
    }
    if (chosen) {
      this.show(chosen, now);
    }
    this.settleDelay(now);
    this.measureLevel(now);
  };

  Session.prototype.show = function (frame, now) {
    var stats = this.stats;
    var canvas = this.player.canvas();
    if (canvas) {
      if (canvas.width !== frame.bitmap.width || canvas.height !== frame.bitmap.height) {
        canvas.width = frame.bitmap.width;
        canvas.height = frame.bitmap.height;
      }
      canvas.getContext("2d").drawImage(frame.bitmap, 0, 0);
    }
    frame.bitmap.close();
    var perf = performance.now();
    stats.frames += 1;
    if (stats.first_frame_ms === null) {
      stats.first_frame_ms = round(perf - stats.started_ms, 0);
    }
    if (stats.state !== "live" && !this.closed) {
      stats.state = "live";
      this.resolveLive(stats);
    }
    this.shownTimes.push(perf);
    while (this.shownTimes.length && this.shownTimes[0] < perf - 1000) {
      this.shownTimes.shift();
    }
    var delay = frame.drivenBy !== null ? perf - frame.drivenBy : (now - this.T0 - frame.media) * 1000;
    this.delays.push(delay);
    if (this.delays.length > 50) {
      this.delays.shift();
    }
    if (this.mode !== "microphone") {
      this.offsets.push((now - (this.T0 + frame.media + this.delay)) * 1000); // + : the picture is late
      if (this.offsets.length > 100) {
        this.offsets.shift();
      }
    }
    this.matchOnsets(frame, now, perf);
  };

  Session.prototype.matchOnsets = function (frame, now, perf) {
    var stats = this.stats;
    var remaining = [];
    for (var i = 0; i < this.onsets.length; i++) {
      var onset = this.onsets[i];
      var value = null;
      if (typeof onset.captured === "number") {
        if (frame.drivenBy !== null && frame.drivenBy >= onset.captured) {
          value = perf - onset.captured; // microphone: your voice's capture → the first frame it drives
        }
      } else if (frame.media + FRAME_S > onset.media) {
        var heard = this.audibleAt(onset.media);
        value = ((heard === null ? this.T0 + onset.media + this.delay : heard) - now) * -1000;
      }
      if (value === null) {
        remaining.push(onset);
      } else {
        stats.onsets_ms.push(round(value, 0));
      }
    }
    this.onsets = remaining;
    if (stats.onsets_ms.length) {
      stats.onset_to_motion_ms = median(stats.onsets_ms);
    }
  };

  Session.prototype.settleDelay = function (now) {
    if (this.lastSettle && now - this.lastSettle < 1.0) {
      return;
    }
    this.lastSettle = now;
    if (this.audioAhead(now) || this.lateness.length < 10) {
      return;
    }
    var recent = this.lateness.map(function (item) { return item[1]; });
    var target = quantile(recent, 0.9) + (MARGIN_S[this.mode] || 0.08);
    if (target > this.delay) {
      this.delay = target;
    } else if (target < this.delay - 0.03) {
      this.delay = Math.max(target, this.delay - 0.05); // come closer slowly: a few frames skipped at most
    }
  };

  Session.prototype.measureLevel = function (now) {
    var stats = this.stats;
    stats.audio_playing = false;
    for (var i = 0; i < this.sources.length; i++) {
      if (this.sources[i].start <= now && now < this.sources[i].end) {
        stats.audio_playing = true;
      }
    }
    if (this.analyser && stats.audio_playing) {
      this.analyser.getFloatTimeDomainData(this.levels);
      var peak = 0;
      for (var j = 0; j < this.levels.length; j++) {
        peak = Math.max(peak, Math.abs(this.levels[j]));
      }
      stats.audio_peak = Math.max(stats.audio_peak, peak);
    }
    if (this.interruptAt !== null && !stats.speaking && !stats.audio_playing && !this.sources.length) {
      stats.interrupt_ms = round(performance.now() - this.interruptAt, 0);
      this.interruptAt = null;
    }
  };

  Session.prototype.snapshot = function () {
    var stats = this.stats;
    stats.fps = this.shownTimes.filter(function (t) { return t >= performance.now() - 1000; }).length;
    stats.frame_delay_ms = round(median(this.delays), 0);
    stats.av_offset_ms = this.mode === "microphone" ? null : round(median(this.offsets), 1);
    stats.playout_delay_ms = this.delay === null ? null : round(this.delay * 1000, 0);
    stats.dropped_audio_ms = round(stats.server_dropped_audio_ms + stats.player_dropped_audio_ms, 0);
    var copy = JSON.parse(JSON.stringify(stats));
    copy.onset_to_motion_ms = round(stats.onset_to_motion_ms, 0);
    return copy;
  };

  Session.prototype.playFile = function () {
    if (this.send({ type: "play_file" })) {
      this.speakRequests.push(performance.now());
      return true;
    }
    return false;
  };

  Session.prototype.speak = function (text) {
    if (this.send({ type: "speak", text: text })) {
      this.speakRequests.push(performance.now());
      return true;
    }
    return false;
  };

  Session.prototype.interrupt = function () {
    this.interruptAt = performance.now();
    this.speakRequests = [];
    if (this.stats.speaking) {
      this.muteBefore = Infinity; // until the server says where the utterance ended (or the next one begins)
    }
    this.silence();
    this.send({ type: "interrupt" });
  };

  Session.prototype.stop = function () {
    if (this.closed) {
      return this.endedSeen;
    }
    if (!this.send({ type: "stop" })) {
      this.finish("Stopped.", false);
    } else {
      var self = this;
      setTimeout(function () { self.finish(self.endMessage || "Stopped.", false); }, 5000); // a silent server
    }
    return this.endedSeen;
  };

  Session.prototype.finish = function (message, failed) {
    if (this.closed) {
      return;
    }
    this.closed = true;
    clearInterval(this.pinger);
    if (this.mic) {
      this.mic.close();
    }
    this.silence();
    this.frames.forEach(function (frame) { frame.bitmap.close(); });
    this.frames = [];
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      try {
        this.ws.close(1000);
      } catch (error) {
        // already closing
      }
    }
    if (this.context) {
      var context = this.context;
      setTimeout(function () { context.close().catch(function () { return null; }); }, 200);
    }
    if (failed && !this.stats.error) {
      this.stats.error = message;
    }
    this.stats.speaking = false;
    this.stats.audio_playing = false;
    this.stats.busy_ahead = null;
    this.stats.state = "ended";
    this.stats.message = message;
    this.player.sessionEnded(this);
    this.rejectLive(new Error(this.stats.error || message));
    this.resolveEnded(this.snapshot());
  };

  // ---------------------------------------------------------------------------------------------- the page

  function Player() {
    this.session = null;
    this.last = freshStats(null);
    this.pendingControls = {};
    var self = this;
    var loop = function () {
      if (self.session) {
        self.session.tick();
      }
      window.requestAnimationFrame(loop);
    };
    window.requestAnimationFrame(loop);
    setInterval(function () { // animation frames stop in a hidden tab: keep time there too
      if (document.hidden && self.session) {
        self.session.tick();
      }
    }, 20);
    setInterval(function () { self.render(); }, 250);
  }

  Player.prototype.canvas = function () {
    return $("#ditto-live-canvas");
  };

  /** The Live tab's widgets exist only once the tab has been shown: open it if needed. */
  Player.prototype.widgets = async function () {
    if (!$("#ditto-live-start-btn")) {
      var tabs = Array.prototype.slice.call(document.querySelectorAll("button[role=tab]"));
      var live = tabs.filter(function (tab) { return tab.textContent.trim() === "Live"; })[0];
      if (live) {
        live.click();
      }
      for (var i = 0; i < 100 && !$("#ditto-live-start-btn"); i++) {
        await sleep(50);
      }
    }
    if (!$("#ditto-live-start-btn")) {
      throw new Error("The Live tab is not on this page.");
    }
  };

  /** Hand the start request to the live_start event and wait for its ticket (or its place in the queue). */
  Player.prototype.requestTicket = async function (session) {
    await this.widgets();
    this.request = { mode: session.mode, id: session.requestId }; // start's text is sent once the delay is known
    var self = this;
    var ticket = new Promise(function (resolve, reject) {
      session.resolveTicket = resolve;
      session.rejectTicket = reject;
    });
    $("#ditto-live-start-btn").click();
    var started = performance.now();
    var watch = setInterval(function () {
      if (session.closed || session.ticketSettled) {
        clearInterval(watch);
        return;
      }
      var tracker = $("#ditto-live-ticket [data-testid=status-tracker]");
      var text = tracker ? tracker.textContent : "";
      if (tracker && (tracker.classList.contains("error") || /^\s*Error\b/.test(text))) {
        session.ticketSettled = true;
        session.rejectTicket(new Error("The server could not start the live session; press Start again."));
        return;
      }
      var queued = /queue:\s*(\d+)\s*\/\s*(\d+)/.exec(text);
      var ahead = queued ? parseInt(queued[1], 10) : null;
      if (ahead !== session.stats.busy_ahead) {
        session.stats.busy_ahead = ahead;
        session.stats.message = ahead ? "The server is busy: " + ahead + " ahead of you." : "Starting…";
        self.render();
      }
      self.readTicketBox(session);
      if (performance.now() - started > START_TIMEOUT_MS) {
        session.ticketSettled = true;
        session.rejectTicket(new Error("No place on the server within ten minutes; try again later."));
      }
    }, 200);
    return ticket;
  };

  Player.prototype.readTicketBox = function (session) {
    var box = $("#ditto-live-ticket textarea, #ditto-live-ticket input");
    if (box && box.value) {
      this.onTicket(box.value);
    }
  };

  /** What the live_start event wrote into the ticket box (also called by the box's change event). */
  Player.prototype.onTicket = function (text) {
    var session = this.session;
    var update;
    try {
      update = JSON.parse(text);
    } catch (error) {
      return;
    }
    if (!session || !update || update.request_id !== session.requestId) {
      return;
    }
    if (update.state === "ready" && !session.ticketSettled) {
      session.ticketSettled = true;
      session.stats.busy_ahead = null;
      session.resolveTicket(update);
    } else if (update.state === "error" && !session.ticketSettled) {
      session.ticketSettled = true;
      session.rejectTicket(new Error(update.message || "The live session could not start."));
    } else if (update.state === "ended" && session.ticketSettled && !session.closed && !session.ws) {
      session.finish(update.reason || "The live session ended.", true);
    }
  };

  Player.prototype.requestJson = function () {
    return JSON.stringify(this.request || { mode: "microphone" });
  };

  Player.prototype.start = async function (options) {
    options = options || {};
    var mode = MODES[String(options.mode || "microphone").toLowerCase()];
    if (!mode) {
      throw new Error("Unknown mode " + JSON.stringify(options.mode) + ": use microphone, file or text.");
    }
    if (this.session && !this.session.closed) {
      await this.session.stop();
    }
    var text = mode === "text" && options.text ? String(options.text).trim() : "";
    var session = new Session(this, mode, text || null);
    this.session = session;
    this.hideFallback();
    this.render();
    try {
      await session.begin();
    } catch (error) {
      session.finish(error && error.message ? error.message : String(error), true);
      throw error;
    }
    return session.liveSeen.then(function () { return session.snapshot(); });
  };

  Player.prototype.stop = async function () {
    var session = this.session;
    if (!session) {
      return this.stats();
    }
    await session.stop();
    return this.stats();
  };

  Player.prototype.sessionEnded = function (session) {
    if (session === this.session) {
      this.last = session.snapshot();
    }
    this.render();
  };

  Player.prototype.stats = function () {
    var session = this.session;
    if (!session) {
      return JSON.parse(JSON.stringify(this.last));
    }
    return session.closed ? JSON.parse(JSON.stringify(this.last)) : session.snapshot();
  };

  Player.prototype.live = function () {
    var session = this.session;
    return session && !session.closed && session.T0 !== null ? session : null;
  };

  Player.prototype.speak = async function (text) {
    text = String(text || "").trim();
    if (!text) {
      this.say("Type the text to speak first.");
      return false;
    }
    var session = this.live();
    if (!session) {
      await this.start({ mode: "text", text: text });
      return true;
    }
    return session.speak(text);
  };

  Player.prototype.playFile = async function () {
    var session = this.live();
    if (!session) {
      await this.start({ mode: "file" });
      return true;
    }
    return session.playFile();
  };

  Player.prototype.interrupt = function () {
    var session = this.live();
    if (session) {
      session.interrupt();
    }
    return !!session;
  };

  /** Change live controls: {name: value}; widget values are turned into the protocol's. */
  Player.prototype.setControls = function (controls) {
    var clean = {};
    Object.keys(controls || {}).forEach(function (name) {
      if (LIVE_CONTROLS.indexOf(name) < 0) {
        return;
      }
      var value = controls[name];
      if (name === "emotion") {
        value = emotionValue(value);
      }
      clean[name] = value;
    });
    Object.assign(this.pendingControls, clean);
    var session = this.live();
    if (session && Object.keys(clean).length) {
      session.send({ type: "controls", controls: clean });
    }
    return clean;
  };

  function emotionValue(value) {
    if (value === null || value === undefined || value === "" || EMOTION_DEFAULT.test(String(value))) {
      return null;
    }
    if (typeof value !== "string") {
      return value;
    }
    var text = value.trim();
    if (text.charAt(0) === "{") {
      return JSON.parse(text);
    }
    if (text.indexOf(":") < 0) {
      return text;
    }
    var mix = {};
    text.split(",").forEach(function (part) {
      var pieces = part.split(":");
      mix[pieces[0].trim()] = parseFloat(pieces[1]);
    });
    return mix;
  }

  Player.prototype.say = function (message) {
    var stats = this.session && !this.session.closed ? this.session.stats : this.last;
    stats.message = message;
    this.render();
  };

  Player.prototype.offerFallback = function () {
    var fallback = $("#ditto-live-fallback");
    if (fallback) {
      fallback.classList.add("ditto-live-fallback-offered");
      var header = fallback.querySelector("button.label-wrap");
      if (header && !header.classList.contains("open")) {
        header.click();
      }
    }
  };

  Player.prototype.hideFallback = function () {
    var fallback = $("#ditto-live-fallback");
    if (fallback) {
      fallback.classList.remove("ditto-live-fallback-offered");
    }
  };

  /** The figures and notices, in words with units. */
  Player.prototype.render = function () {
    var figures = $("#ditto-live-figures");
    var notice = $("#ditto-live-notice");
    var status = $("#ditto-live-status");
    if (!figures && !notice && !status) {
      return;
    }
    var s = this.stats();
    var lines = [];
    if (s.state === "live" || (s.state === "ended" && s.frames)) {
      if (s.onset_to_motion_ms !== null) {
        lines.push(s.mode === "microphone" ? "Lip motion starts " + seconds(s.onset_to_motion_ms) +
          " after you speak" : "Lip motion starts " + seconds(Math.abs(s.onset_to_motion_ms)) +
          (s.onset_to_motion_ms >= 0 ? " after" : " before") + " the sound");
      }
      if (s.frame_delay_ms !== null) {
        lines.push("picture " + seconds(s.frame_delay_ms) + " behind real time");
      }
      lines.push(s.fps + " fps shown");
      if (s.av_offset_ms !== null) {
        lines.push("audio and video within " + Math.max(1, Math.round(Math.abs(s.av_offset_ms))) + " ms");
      }
      if (s.speak_to_sound_ms !== null) {
        lines.push("first words heard " + seconds(s.speak_to_sound_ms) + " after you asked");
      }
      lines.push(s.frames + " frames shown");
      if (s.dropped_audio_ms > 0) {
        lines.push(seconds(s.dropped_audio_ms) + " of audio dropped to keep up");
      }
    }
    if (figures) {
      figures.textContent = lines.join(" · ");
    }
    var words = "";
    var slow = s.state === "live" && ((s.server_fps !== null && s.server_fps < FPS - 3) || s.late_frames > 0 ||
      (s.behind_s !== null && s.behind_s > 1.0));
    if (s.state === "live" && s.muted_audio_ms > 0 && s.mode !== "microphone") {
      words = "This browser blocks sound on the page until you click it: press Start with the mouse to hear the " +
        "avatar. ";
    }
    if (s.state === "live" && slow) {
      words += "The server is slower than real time" + (s.server_fps !== null ? " (" + Math.round(s.server_fps) +
        " of " + FPS + " frames a second)" : "") + ": frames are skipped to keep the picture in sync" +
        (s.late_frames ? " (" + s.late_frames + " so far)" : "") + ".";
    }
    if (notice) {
      notice.textContent = words;
      notice.style.display = words ? "" : "none";
    }
    if (status) {
      var state = s.error ? s.error : s.message;
      if (s.state === "starting" && s.busy_ahead) {
        state = "The server is busy: " + s.busy_ahead + " ahead of you.";
      } else if (s.state === "idle") {
        state = state || "Choose a mode and press Start.";
      } else if (s.state === "live") {
        state = (s.speaking ? "Live: speaking." : "Live.") + (s.message && s.message !== "Live." ? " " +
          s.message : "");
      }
      status.textContent = state || "";
      status.setAttribute("data-state", s.state);
    }
  };

  var player = new Player();

  window.dittoLive = {
    /** Start a live session: {mode: "microphone" | "file" | "text", text}. Resolves once frames are shown. */
    start: function (options) { return player.start(options); },
    /** End the session; resolves with the final figures. */
    stop: function () { return player.stop(); },
    /** The figures now (see docs/live_protocol.md §5). */
    stats: function () { return player.stats(); },
    speak: function (text) { return player.speak(text); },
    playFile: function () { return player.playFile(); },
    interrupt: function () { return player.interrupt(); },
    setControls: function (controls) { return player.setControls(controls); },
    // for the Live tab's own events
    _requestJson: function () { return player.requestJson(); },
    _onTicket: function (text) { player.onTicket(text); },
    _control: function (name, value) {
      var change = {};
      change[name] = value;
      return player.setControls(change);
    },
  };
})();
