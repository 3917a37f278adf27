// Tokenizers for the models the browser runs (live.js): the same ids and labels as attnlab's Python
// tokenizers, from the files attnlab.site.onnx exports beside each model.
//
// - char: one id per character of the model's alphabet (vocab.json, id = index); a character outside
//   it is an error naming it, as attnlab.tokenizers.char does.
// - wordpiece: BERT's pipeline as Hugging Face `tokenizers` runs it for MiniLM (its tokenizer.json:
//   BertNormalizer, BertPreTokenizer, WordPiece, [CLS] ... [SEP]). Special tokens typed in the text
//   ("[SEP]") are split as plain text, as attnlab's HFJsonTokenizer does (encode_special_tokens).

const WHITESPACE = /\p{White_Space}/u;
const OTHER = /\p{C}/u; // Cc, Cf, Cs, Co, Cn: what BertNormalizer's clean_text removes
const NONSPACING_MARK = /\p{Mn}/u;
const PUNCTUATION = /\p{P}/u;
const ASCII_PUNCTUATION = new Set(Array.from("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"));
const CJK = [[0x4e00, 0x9fff], [0x3400, 0x4dbf], [0x20000, 0x2a6df], [0x2a700, 0x2b73f], [0x2b740, 0x2b81f],
  [0x2b920, 0x2ceaf], [0xf900, 0xfaff], [0x2f800, 0x2fa1f]];

/** Python's repr() of a short string, for messages that quote text as the server does. */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = "";
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === "\\") out += "\\\\";
    else if (ch === quote) out += "\\" + ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (OTHER.test(ch) || WHITESPACE.test(ch) && ch !== " ") {
      const hex = code.toString(16);
      out += code < 0x100 ? "\\x" + hex.padStart(2, "0") : code < 0x10000 ? "\\u" + hex.padStart(4, "0") : "\\U" + hex.padStart(8, "0");
    } else out += ch;
  }
  return quote + out + quote;
}

/** A tokenizer error: the message is the server's (attnlab.web.models.tokenize adds the model's name). */
export class TokenizeError extends Error {}

export function charTokenizer(chars) {
  const index = new Map(chars.map((ch, i) => [ch, i]));
  return {
    vocabSize: chars.length,
    encode(text) {
      const points = Array.from(text);
      return points.map((ch, pos) => {
        const id = index.get(ch);
        if (id === undefined) {
          const hex = ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
          throw new TokenizeError(`character ${pyRepr(ch)} (U+${hex}) at position ${pos} `
            + `is not in this tokenizer's vocabulary of ${chars.length} characters (it never occurred in the training text)`);
        }
        return id;
      });
    },
    tokens: (ids) => ids.map((i) => chars[i]),
  };
}

function isCjk(code) {
  return CJK.some(([lo, hi]) => code >= lo && code <= hi);
}

/** BertNormalizer: clean the text, space out CJK characters, strip accents, lowercase (per character). */
export function bertNormalize(text, spec) {
  let chars = Array.from(text);
  if (spec.clean_text) {
    chars = chars.filter((c) => c === "\t" || c === "\n" || c === "\r" || !(c === "\0" || c === "\ufffd" || OTHER.test(c)))
      .map((c) => (WHITESPACE.test(c) ? " " : c));
  }
  if (spec.handle_chinese_chars) chars = chars.flatMap((c) => (isCjk(c.codePointAt(0)) ? [" ", c, " "] : [c]));
  if (spec.strip_accents) chars = Array.from(chars.join("").normalize("NFD")).filter((c) => !NONSPACING_MARK.test(c));
  if (spec.lowercase) chars = chars.map((c) => c.toLowerCase()); // per character: no final-sigma rule
  return chars.join("");
}

/** BertPreTokenizer: split on whitespace, and every punctuation character is a word of its own. */
export function bertWords(text) {
  const words = [];
  let word = "";
  for (const c of text) {
    if (WHITESPACE.test(c)) {
      if (word) words.push(word);
      word = "";
    } else if (ASCII_PUNCTUATION.has(c) || PUNCTUATION.test(c)) {
      if (word) words.push(word);
      words.push(c);
      word = "";
    } else word += c;
  }
  if (word) words.push(word);
  return words;
}

export function wordpieceTokenizer(pieces, spec) {
  const vocab = new Map(pieces.map((p, i) => [p, i]));
  const unk = vocab.get(spec.unk_token);
  const wordIds = (word) => {
    const chars = Array.from(word);
    if (chars.length > spec.max_input_chars_per_word) return [unk];
    const ids = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found;
      while (start < end) {
        const piece = (start > 0 ? spec.prefix : "") + chars.slice(start, end).join("");
        found = vocab.get(piece);
        if (found !== undefined) break;
        end -= 1;
      }
      if (found === undefined) return [unk]; // greedy longest match failed: the whole word is unknown
      ids.push(found);
      start = end;
    }
    return ids;
  };
  return {
    vocabSize: pieces.length,
    encode(text) {
      if (text === "") return [];
      const ids = bertWords(bertNormalize(text, spec)).flatMap(wordIds);
      return spec.add_special_tokens ? [spec.cls, ...ids, spec.sep] : ids;
    },
    tokens: (ids) => ids.map((i) => pieces[i]),
  };
}

/** The tokenizer a manifest's ``tokenizer`` entry describes, given the text of its file. */
export function makeTokenizer(spec, fileText) {
  if (spec.kind === "char") return charTokenizer(JSON.parse(fileText));
  if (spec.kind === "wordpiece") return wordpieceTokenizer(fileText.split("\n").slice(0, -1), spec);
  throw new Error(`no browser tokenizer of kind ${spec.kind}`);
}
