// The page's message catalogue (chosen by the server from Accept-Language) and helpers to fill it in.
"use strict";

window.I18n = (function () {
  const messages = JSON.parse(document.getElementById("messages").textContent);
  const lang = document.documentElement.lang || "en";
  const plural = new Intl.PluralRules(lang);
  const number = (digits) => new Intl.NumberFormat(lang, { maximumFractionDigits: digits });

  function t(key, values) {
    let text = messages[key];
    if (text === undefined) return key;
    for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  // "queue_ahead" + n -> queue_ahead_one / queue_ahead_other, as the language's plural rules say.
  function tn(key, n, values) {
    const form = `${key}_${plural.select(n)}`;
    return t(messages[form] !== undefined ? form : `${key}_other`, { n, ...(values || {}) });
  }

  function duration(seconds) {
    if (seconds < 60) return t("seconds", { n: Math.max(1, Math.round(seconds)) });
    return t("minutes", { n: Math.round(seconds / 60) });
  }

  function errorCode(code, values) {
    const codes = messages.error_codes || {};
    return code && codes[code] ? codes[code].split("{mb}").join((values && values.mb) || "") : null;
  }

  return { t, tn, duration, errorCode, number, lang };
})();
